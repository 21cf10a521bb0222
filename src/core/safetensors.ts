import { closeSync, fstatSync, openSync, readSync, renameSync, writeSync, rmSync } from 'node:fs';
import { DTYPE_BYTES, numel, toF32, type DType, type F32Tensor, type Tensor, type TensorData } from './tensor.js';
import { InputError } from './errors.js';

/** A header larger than this is not a real checkpoint (SD 1.5's is about 100 KB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsError extends InputError {
  constructor(
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor ? ` [${tensor}]` : ''}: ${message}`);
    this.name = 'SafetensorsError';
  }
}

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

/**
 * A safetensors file opened for random access: the header is read and validated up front, tensors are read one at
 * a time with positioned reads, so files over 2 GiB never sit in memory whole.
 */
export class SafetensorsFile {
  readonly entries: Map<string, TensorEntry>;
  readonly metadata: Record<string, string>;
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    entries: Map<string, TensorEntry>,
    metadata: Record<string, string>,
  ) {
    this.fd = fd;
    this.entries = entries;
    this.metadata = metadata;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new SafetensorsError(path, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const { entries, metadata } = readHeader(path, fd);
      return new SafetensorsFile(path, fd, entries, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  get names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): TensorEntry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.path, 'no such tensor', name);
    return e;
  }

  /** The tensor as stored. */
  read(name: string): Tensor {
    if (this.fd === undefined) throw new SafetensorsError(this.path, 'file is closed', name);
    const e = this.entry(name);
    const bytes = e.end - e.begin;
    const buf = new ArrayBuffer(bytes);
    const view = new Uint8Array(buf);
    let done = 0;
    while (done < bytes) {
      const n = readSync(this.fd, view, done, Math.min(bytes - done, 1 << 30), e.begin + done);
      if (n === 0)
        throw new SafetensorsError(this.path, `file ends inside the tensor (read ${done} of ${bytes} bytes)`, name);
      done += n;
    }
    return { dtype: e.dtype, shape: e.shape, data: typedView(e.dtype, buf) };
  }

  /** The tensor widened to float32 (F16 and BF16 weights run in F32 on the CPU). */
  readF32(name: string): F32Tensor {
    const t = this.read(name);
    try {
      return toF32(t, name);
    } catch (err) {
      throw new SafetensorsError(this.path, (err as Error).message, name);
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function typedView(dtype: DType, buf: ArrayBuffer): TensorData {
  switch (dtype) {
    case 'F64':
      return new Float64Array(buf);
    case 'F32':
      return new Float32Array(buf);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buf);
    case 'I64':
      return new BigInt64Array(buf);
    case 'I32':
      return new Int32Array(buf);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(buf);
  }
}

function readHeader(path: string, fd: number): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const size = fstatSync(fd).size;
  if (size < 8) throw new SafetensorsError(path, `file is ${size} bytes, too short for a safetensors header`);
  const lenBuf = Buffer.alloc(8);
  readSync(fd, lenBuf, 0, 8, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(path, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const hl = Number(headerLen);
  if (8 + hl > size) throw new SafetensorsError(path, `header length ${hl} runs past the end of the ${size}-byte file`);
  const headerBuf = Buffer.alloc(hl);
  readSync(fd, headerBuf, 0, hl, 8);
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(path, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(path, 'header is not a JSON object');
  }
  const dataStart = 8 + hl;
  const dataLen = size - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    // JSON.parse keeps "__proto__" as an own key; copied into an object later it would replace the prototype.
    if (name === '__proto__') throw new SafetensorsError(path, 'a tensor named "__proto__" is not accepted');
    if (name === '__metadata__') {
      const isObject = typeof raw === 'object' && raw !== null && !Array.isArray(raw);
      if (!isObject || Object.values(raw).some((v) => typeof v !== 'string')) {
        throw new SafetensorsError(path, '__metadata__ must map strings to strings');
      }
      if (Object.hasOwn(raw, '__proto__')) {
        throw new SafetensorsError(path, '__metadata__ key "__proto__" is not accepted');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== 'object' || info === null) throw new SafetensorsError(path, 'entry is not an object', name);
    if (!isDType(info.dtype)) throw new SafetensorsError(path, `unsupported dtype ${JSON.stringify(info.dtype)}`, name);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(path, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    }
    const offs = info.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offs[0] > offs[1]
    ) {
      throw new SafetensorsError(
        path,
        `data_offsets ${JSON.stringify(offs)} are not [begin, end] with begin <= end`,
        name,
      );
    }
    const [b, e] = offs as [number, number];
    if (e > dataLen) {
      throw new SafetensorsError(
        path,
        `data_offsets [${b}, ${e}] run past the end of the data (${dataLen} bytes); the file may be truncated`,
        name,
      );
    }
    const expected = numel(shape as number[]) * DTYPE_BYTES[info.dtype];
    if (e - b !== expected) {
      throw new SafetensorsError(
        path,
        `${info.dtype}[${shape}] needs ${expected} bytes but data_offsets span ${e - b}`,
        name,
      );
    }
    entries.set(name, { name, dtype: info.dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }
  // The format requires the byte buffer to be fully indexed: tensors tile it with no overlap and no hole.
  const sorted = [...entries.values()].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.begin < cursor)
      throw new SafetensorsError(
        path,
        `data overlaps the previous tensor (offset ${t.begin - dataStart} < ${cursor - dataStart})`,
        t.name,
      );
    if (t.begin > cursor)
      throw new SafetensorsError(path, `hole of ${t.begin - cursor} bytes before this tensor`, t.name);
    cursor = t.end;
  }
  if (cursor !== size)
    throw new SafetensorsError(path, `${size - cursor} bytes after the last tensor are not indexed by the header`);
  return { entries, metadata };
}

/** Read every tensor of a small file into memory. */
export function readSafetensors(path: string): Map<string, Tensor> {
  const f = SafetensorsFile.open(path);
  try {
    return new Map(f.names.map((n) => [n, f.read(n)]));
  } finally {
    f.close();
  }
}

/**
 * Write tensors as safetensors, streaming one tensor at a time, to a temporary file renamed into place so that a
 * crash never leaves a half-written file under the final name.
 */
export function writeSafetensors(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata?: Record<string, string>,
): void {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of list) {
    const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw new SafetensorsError(
        path,
        `${t.dtype}[${t.shape}] needs ${bytes} bytes but the data holds ${t.data.byteLength}`,
        name,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad the header with spaces to 8 bytes so that the data that follows is aligned.
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, json);
    for (const [, t] of list) {
      const view = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      for (let done = 0; done < view.length; ) done += writeSync(fd, view, done, Math.min(view.length - done, 1 << 30));
    }
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true });
    throw e;
  }
}
