import { InvalidArgumentError, Option } from 'commander';
import { PROVIDERS } from '../onnx/session.js';

/** Commander parsers that refuse what is not a number, with the option's name in the message. */
export function intOption(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n))
      throw new InvalidArgumentError(`${name} expects an integer, got '${v}'`);
    return n;
  };
}

export function numberOption(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || Number.isNaN(n)) throw new InvalidArgumentError(`${name} expects a number, got '${v}'`);
    return n;
  };
}

export function seedOption(name: string): (v: string) => bigint {
  return (v) => {
    if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} expects an integer in 0..2^64-1, got '${v}'`);
    const s = BigInt(v.trim());
    if (s >= 2n ** 64n) throw new InvalidArgumentError(`${name} ${v} is over 2^64-1`);
    return s;
  };
}

/** `--provider`: the ONNX Runtime execution provider every session of the command uses. */
export function providerOption(): Option {
  return new Option('--provider <name>', 'execution provider (GPU providers run a float16 UNet)')
    .choices(PROVIDERS)
    .default('cpu');
}
