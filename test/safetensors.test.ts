import test from 'ava';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, SafetensorsFile, writeSafetensors } from '../src/core/safetensors.js';
import { f16ToF32, f32ToF16, bf16ToF32, type Tensor } from '../src/core/tensor.js';
import { fixture } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'st-'));

/** A file with a hand-written header, to exercise the validator. */
function rawFile(name: string, header: object, dataBytes: number): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return p;
}

test('round-trips every dtype', (t) => {
  const tensors: Record<string, Tensor> = {
    f32: { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) },
    f16: { dtype: 'F16', shape: [2], data: f32ToF16(Float32Array.from([1.5, -2])) },
    bf16: { dtype: 'BF16', shape: [1], data: Uint16Array.from([0x3fc0]) },
    i64: { dtype: 'I64', shape: [2], data: BigInt64Array.from([1n, -(2n ** 40n)]) },
    i32: { dtype: 'I32', shape: [1, 1], data: Int32Array.from([7]) },
    u8: { dtype: 'U8', shape: [3], data: Uint8Array.from([0, 128, 255]) },
    bool: { dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) },
    empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  };
  const p = join(dir, 'all.safetensors');
  writeSafetensors(p, tensors, { format: 'pt' });
  const f = SafetensorsFile.open(p);
  t.deepEqual(f.metadata, { format: 'pt' });
  for (const [k, v] of Object.entries(tensors)) {
    const r = f.read(k);
    t.is(r.dtype, v.dtype);
    t.deepEqual(r.shape, v.shape);
    t.deepEqual([...r.data], [...v.data]);
  }
  t.deepEqual([...f.readF32('f16').data], [1.5, -2]);
  t.deepEqual([...f.readF32('bf16').data], [1.5]);
  t.throws(() => f.readF32('i64'), { message: /all\.safetensors \[i64\].*floating-point/ });
  f.close();
});

test('f16 conversion is exact both ways, subnormals and infinities included', (t) => {
  const words = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16(f16ToF32(words));
  for (let i = 0; i < 65536; i++) {
    const nan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (!nan && back[i] !== i) return t.fail(`word ${i.toString(16)} came back as ${back[i].toString(16)}`);
  }
  t.is(f16ToF32(Uint16Array.from([0x0001]))[0], 2 ** -24);
  t.is(f32ToF16(Float32Array.from([65520]))[0], 0x7c00, 'rounds past the largest half to infinity');
  t.is(bf16ToF32(Uint16Array.from([0xbf80]))[0], -1);
});

test('reads the reference fixtures', (t) => {
  const m = readSafetensors(fixture('unet_golden.safetensors'));
  t.deepEqual(m.get('sample')!.shape, [3, 4, 8, 8]);
  t.is(m.get('timestep')!.dtype, 'I64');
});

test('rejects a truncated file, naming the file and the tensor', (t) => {
  const p = join(dir, 'ok.safetensors');
  writeSafetensors(p, { w: { dtype: 'F32', shape: [16], data: new Float32Array(16) } });
  const bytes = readFileSync(p);
  const cut = join(dir, 'cut.safetensors');
  writeFileSync(cut, bytes.subarray(0, bytes.length - 10));
  t.throws(() => SafetensorsFile.open(cut), {
    message: /cut\.safetensors \[w\]: data_offsets \[0, 64\] run past the end/,
  });
});

test('rejects a header length past the end of the file', (t) => {
  const p = join(dir, 'hdr.safetensors');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(1000n);
  writeFileSync(p, Buffer.concat([len, Buffer.from('{}')]));
  t.throws(() => SafetensorsFile.open(p), { message: /hdr\.safetensors: header length 1000 runs past the end/ });
  len.writeBigUInt64LE(2n ** 40n);
  writeFileSync(p, Buffer.concat([len, Buffer.from('{}')]));
  t.throws(() => SafetensorsFile.open(p), { message: /exceeds the \d+-byte limit/ });
});

test('rejects overlapping offsets, holes and dtype/length mismatches', (t) => {
  const overlap = rawFile(
    'overlap.safetensors',
    { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
    12,
  );
  t.throws(() => SafetensorsFile.open(overlap), { message: /overlap\.safetensors \[b\]: data overlaps/ });
  const hole = rawFile('hole.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8);
  t.throws(() => SafetensorsFile.open(hole), { message: /\[a\]: hole of 4 bytes/ });
  const mismatch = rawFile('mm.safetensors', { a: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } }, 8);
  t.throws(() => SafetensorsFile.open(mismatch), {
    message: /mm\.safetensors \[a\]: F16\[3\] needs 6 bytes but data_offsets span 8/,
  });
  const dtype = rawFile('dt.safetensors', { a: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, 8);
  t.throws(() => SafetensorsFile.open(dtype), { message: /\[a\]: unsupported dtype "C64"/ });
  const trailing = rawFile('tr.safetensors', { a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 5);
  t.throws(() => SafetensorsFile.open(trailing), { message: /4 bytes after the last tensor/ });
  const notJson = join(dir, 'nj.safetensors');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(3n);
  writeFileSync(notJson, Buffer.concat([len, Buffer.from('{x}')]));
  t.throws(() => SafetensorsFile.open(notJson), { message: /nj\.safetensors: header is not valid JSON/ });
});

test('a failed write leaves no file behind', (t) => {
  const p = join(dir, 'bad.safetensors');
  t.throws(() => writeSafetensors(p, { w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), {
    message: /needs 12 bytes/,
  });
  t.throws(() => readFileSync(p));
});

test('reads tensors that lie past 2 GiB without reading the file whole (sparse file)', (t) => {
  const big = 2 ** 31 + 16;
  const header = Buffer.from(
    JSON.stringify({
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      tail: { dtype: 'F32', shape: [4], data_offsets: [big, big + 16] },
    }),
  );
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const p = join(dir, 'big.safetensors');
  writeFileSync(p, Buffer.concat([len, header]));
  const fd = openSync(p, 'r+');
  writeSync(fd, Buffer.from(Float32Array.from([1, 2, 3, 4]).buffer), 0, 16, 8 + header.length + big);
  closeSync(fd);
  t.teardown(() => rmSync(p, { force: true }));
  const f = SafetensorsFile.open(p);
  t.deepEqual([...f.readF32('tail').data], [1, 2, 3, 4]);
  f.close();
});
