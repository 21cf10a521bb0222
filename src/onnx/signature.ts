import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { InputError } from '../core/errors.js';

/**
 * The inputs and outputs of an ONNX model file, read without loading it: the protobuf is walked field by field and
 * nodes and initializers (the bulk of the file) are skipped by their length prefixes, so a multi-gigabyte model
 * costs a few reads.
 */

export interface OnnxValueInfo {
  name: string;
  /** ONNX element type name: float, float16, int64, int32, ... */
  type: string;
  /** Fixed sizes as numbers, symbolic ones as their names ('' when unnamed). */
  dims: Array<number | string>;
}

export interface OnnxSignature {
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** Initializer tensors in the file (their count, not their data). */
  initializers: number;
}

const ELEM_TYPES: Record<number, string> = {
  1: 'float',
  2: 'uint8',
  3: 'int8',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  11: 'double',
  16: 'bfloat16',
};

/** A protobuf reader over a byte range, either of a file (by position) or of a buffer already read. */
class Reader {
  constructor(
    private readonly at: (pos: number, len: number) => Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    const bytes = this.at(this.pos, Math.min(10, this.end - this.pos));
    let value = 0;
    let scale = 1;
    for (let i = 0; i < bytes.length; i++) {
      value += (bytes[i] & 0x7f) * scale;
      scale *= 128;
      if ((bytes[i] & 0x80) === 0) {
        this.pos += i + 1;
        return value;
      }
    }
    throw new Error('truncated varint');
  }

  /** The next field: its number, wire type, and for length-delimited fields the byte range of its payload. */
  field(): { no: number; wire: number; start: number; len: number } {
    const tag = this.varint();
    const wire = tag & 7;
    const no = Math.floor(tag / 8);
    if (wire === 0) return { no, wire, start: this.pos, len: this.varint() };
    if (wire === 2) {
      const len = this.varint();
      const start = this.pos;
      this.pos += len;
      if (this.pos > this.end) throw new Error(`field ${no} runs past its message`);
      return { no, wire, start, len };
    }
    if (wire === 1 || wire === 5) {
      this.pos += wire === 1 ? 8 : 4;
      return { no, wire, start: this.pos, len: 0 };
    }
    throw new Error(`unsupported protobuf wire type ${wire}`);
  }

  sub(start: number, len: number): Reader {
    return new Reader(this.at, start, start + len);
  }
}

function bufferReader(buf: Buffer): Reader {
  return new Reader((pos, len) => buf.subarray(pos, pos + len), 0, buf.length);
}

function valueInfo(r: Reader, at: (pos: number, len: number) => Buffer): OnnxValueInfo {
  const info: OnnxValueInfo = { name: '', type: 'unknown', dims: [] };
  const text = (f: { start: number; len: number }) => at(f.start, f.len).toString('utf8');
  while (!r.done) {
    const f = r.field();
    if (f.no === 1 && f.wire === 2) info.name = text(f);
    if (f.no !== 2 || f.wire !== 2) continue;
    const type = r.sub(f.start, f.len);
    while (!type.done) {
      const tf = type.field();
      if (tf.no !== 1 || tf.wire !== 2) continue;
      const tensor = type.sub(tf.start, tf.len);
      while (!tensor.done) {
        const xf = tensor.field();
        if (xf.no === 1 && xf.wire === 0) info.type = ELEM_TYPES[xf.len] ?? `type ${xf.len}`;
        if (xf.no !== 2 || xf.wire !== 2) continue;
        const shape = tensor.sub(xf.start, xf.len);
        while (!shape.done) {
          const df = shape.field();
          if (df.no !== 1 || df.wire !== 2) continue;
          const dim = shape.sub(df.start, df.len);
          let d: number | string = '';
          while (!dim.done) {
            const vf = dim.field();
            if (vf.no === 1 && vf.wire === 0) d = vf.len;
            if (vf.no === 2 && vf.wire === 2) d = text(vf);
          }
          info.dims.push(d);
        }
      }
    }
  }
  return info;
}

/** Read the graph inputs (initializers excluded) and outputs of an ONNX model file. */
export function readOnnxSignature(path: string): OnnxSignature {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const at = (pos: number, len: number) => {
      const buf = Buffer.alloc(len);
      const n = readSync(fd, buf, 0, len, pos);
      return buf.subarray(0, n);
    };
    const model = new Reader(at, 0, size);
    const sig: OnnxSignature = { inputs: [], outputs: [], initializers: 0 };
    const initializerNames = new Set<string>();
    let sawGraph = false;
    while (!model.done) {
      const f = model.field();
      if (f.no !== 7 || f.wire !== 2) continue;
      sawGraph = true;
      const graph = model.sub(f.start, f.len);
      while (!graph.done) {
        const gf = graph.field();
        if (gf.wire !== 2) continue;
        if (gf.no === 5) {
          sig.initializers++;
          // TensorProto.name is field 8; read only the first bytes of each initializer to find it.
          const head = bufferReader(at(gf.start, Math.min(gf.len, 4096)));
          try {
            while (!head.done) {
              const tf = head.field();
              if (tf.no === 8 && tf.wire === 2) {
                initializerNames.add(at(gf.start + tf.start, tf.len).toString('utf8'));
                break;
              }
            }
          } catch {
            // The name lies past the bytes read (after inline data): such an initializer is not a graph input anyway.
          }
        }
        if (gf.no === 11 || gf.no === 12) {
          const info = valueInfo(bufferReader(at(gf.start, gf.len)), (p, l) => at(gf.start + p, l));
          (gf.no === 11 ? sig.inputs : sig.outputs).push(info);
        }
      }
    }
    if (!sawGraph) throw new Error('no graph');
    sig.inputs = sig.inputs.filter((i) => !initializerNames.has(i.name));
    return sig;
  } catch (e) {
    throw new InputError(`${path}: not a readable ONNX model (${(e as Error).message})`);
  } finally {
    closeSync(fd);
  }
}
