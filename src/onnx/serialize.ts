import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { DTYPE_BYTES, numel, type DType, type Tensor } from '../core/tensor.js';
import { FLOAT_ATTRS, type AttrValue, type Dim, type ElemType, type GraphBuilder, type ValueInfo } from './graph.js';

const { onnx } = onnxProto;

/** Opset of the default domain that every graph is written for. */
export const OPSET = 17;
/** Protobuf messages cannot exceed 2 GiB; above this many bytes of weights, write them as external data. */
export const EXTERNAL_DATA_THRESHOLD = 1_800_000_000;

const ELEM: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
  uint8: onnx.TensorProto.DataType.UINT8,
};
const DTYPE_ELEM: Record<DType, number> = {
  F64: onnx.TensorProto.DataType.DOUBLE,
  F32: ELEM.float32,
  F16: ELEM.float16,
  BF16: onnx.TensorProto.DataType.BFLOAT16,
  I64: ELEM.int64,
  I32: ELEM.int32,
  U8: ELEM.uint8,
  BOOL: ELEM.bool,
};

function bytesOf(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function tensorProto(name: string, t: Tensor, external?: { location: string; offset: number }): OnnxTypes.ITensorProto {
  const p: OnnxTypes.ITensorProto = { name, dims: t.shape, dataType: DTYPE_ELEM[t.dtype] };
  if (external) {
    p.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    p.externalData = [
      { key: 'location', value: external.location },
      { key: 'offset', value: String(external.offset) },
      { key: 'length', value: String(t.data.byteLength) },
    ];
  } else {
    p.rawData = bytesOf(t);
  }
  return p;
}

function valueInfo(v: ValueInfo): OnnxTypes.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ELEM[v.type],
        shape: { dim: v.shape.map((d: Dim) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): OnnxTypes.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: Buffer.from(v, 'utf8') };
  if (typeof v === 'number') {
    if (FLOAT_ATTRS.has(name)) return { name, type: T.FLOAT, f: v };
    if (!Number.isInteger(v))
      throw new Error(`attribute ${name}=${v}: not an integer (add it to FLOAT_ATTRS if it is a float)`);
    return { name, type: T.INT, i: v };
  }
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string'))
      return { name, type: T.STRINGS, strings: (v as string[]).map((s) => Buffer.from(s)) };
    if (FLOAT_ATTRS.has(name)) return { name, type: T.FLOATS, floats: v as number[] };
    return { name, type: T.INTS, ints: v as number[] };
  }
  return { name, type: T.TENSOR, t: tensorProto(name, v) };
}

export interface SerializeOptions {
  /** Extra opset imports, e.g. { 'com.microsoft': 1 }. */
  domains?: Record<string, number>;
  /** Write weights to this external file (name relative to the model) starting at these offsets. */
  external?: { location: string; offsets: Map<string, number> };
}

export function modelProto(g: GraphBuilder, opts: SerializeOptions = {}): OnnxTypes.IModelProto {
  const domains = new Set(g.nodes.map((n) => n.domain).filter((d) => d !== ''));
  const opsetImport: OnnxTypes.IOperatorSetIdProto[] = [{ domain: '', version: OPSET }];
  for (const d of domains) opsetImport.push({ domain: d, version: opts.domains?.[d] ?? 1 });
  const initializer = [...g.initializers].map(([name, t]) => {
    const off = opts.external?.offsets.get(name);
    return tensorProto(name, t, off === undefined ? undefined : { location: opts.external!.location, offset: off });
  });
  return {
    irVersion: 8,
    producerName: 'safe-sd',
    opsetImport,
    graph: {
      name: 'main',
      node: g.liveNodes().map((n) => ({
        opType: n.op,
        domain: n.domain,
        name: n.name,
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
      initializer,
    },
  };
}

/** The whole model in memory, weights inline: for graphs under the 2 GiB protobuf limit. */
export function serializeModel(g: GraphBuilder, opts: Omit<SerializeOptions, 'external'> = {}): Uint8Array {
  const bytes = weightBytes(g);
  if (bytes > EXTERNAL_DATA_THRESHOLD)
    throw new Error(`graph holds ${bytes} bytes of weights: too large to inline, save it with external data`);
  return onnx.ModelProto.encode(modelProto(g, opts)).finish();
}

export function weightBytes(g: GraphBuilder): number {
  let n = 0;
  for (const t of g.initializers.values()) n += numel(t.shape) * DTYPE_BYTES[t.dtype];
  return n;
}

const ALIGN = 4096;
/** Small constants stay inline even when weights go external: they are read by shape inference. */
const INLINE_LIMIT = 1024;

/**
 * Write the model to `path`. Weights go to `<file>.data` beside it when they exceed the protobuf limit or when
 * `externalData` is true. Both files are written to temporary names and renamed into place, data first.
 */
export function saveModel(
  g: GraphBuilder,
  path: string,
  opts: { externalData?: boolean; domains?: Record<string, number> } = {},
): { files: string[]; bytes: number } {
  mkdirSync(dirname(path), { recursive: true });
  const external = opts.externalData ?? weightBytes(g) > EXTERNAL_DATA_THRESHOLD;
  const files: string[] = [];
  let total = 0;
  let ext: SerializeOptions['external'];
  if (external) {
    const location = `${basename(path)}.data`;
    const dataPath = `${dirname(path)}/${location}`;
    const offsets = new Map<string, number>();
    const tmp = `${dataPath}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w');
    try {
      let offset = 0;
      for (const [name, t] of g.initializers) {
        if (t.data.byteLength <= INLINE_LIMIT) continue;
        const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
        if (pad) {
          writeSync(fd, new Uint8Array(pad));
          offset += pad;
        }
        offsets.set(name, offset);
        const view = bytesOf(t);
        for (let done = 0; done < view.length; )
          done += writeSync(fd, view, done, Math.min(view.length - done, 1 << 30));
        offset += view.length;
      }
      closeSync(fd);
      renameSync(tmp, dataPath);
      total += offset;
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
    files.push(dataPath);
    ext = { location, offsets };
  }
  const bytes = onnx.ModelProto.encode(modelProto(g, { domains: opts.domains, external: ext })).finish();
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, bytes);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  files.unshift(path);
  return { files, bytes: total + bytes.length };
}
