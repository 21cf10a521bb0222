import { crc32, deflateSync } from 'node:zlib';
import type { F32Tensor } from './tensor.js';
import { InputError } from './errors.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Round half to even, as numpy's round does. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Float images [N, H, W, 3] in [0, 1] → one RGB byte array per image, as diffusers' numpy_to_pil:
 * `(images * 255).round().astype("uint8")` on float32 values clamped to [0, 1] (NaN becomes 0).
 */
export function imagesToBytes(images: F32Tensor): Uint8Array[] {
  const [n, h, w, c] = images.shape;
  if (images.shape.length !== 4 || c !== 3)
    throw new Error(`images: expected shape [N, H, W, 3], got [${images.shape.join(', ')}]`);
  const size = h * w * 3;
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const bytes = new Uint8Array(size);
    for (let j = 0; j < size; j++) {
      const x = images.data[i * size + j];
      const clamped = Number.isNaN(x) ? 0 : Math.min(Math.max(x, 0), 1);
      bytes[j] = roundHalfEven(Math.fround(clamped * 255));
    }
    out.push(bytes);
  }
  return out;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const typeAndData = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(crc32(typeAndData));
  return Buffer.concat([head, typeAndData, tail]);
}

/** A text chunk as PIL writes them: tEXt when the text is Latin-1, else an uncompressed UTF-8 iTXt. */
function textChunk(keyword: string, text: string): Buffer {
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(keyword))
    throw new Error(`PNG text keyword ${JSON.stringify(keyword)}: must be 1-79 Latin-1 characters`);
  const key = Buffer.from(keyword, 'latin1');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: a Latin-1 test, control characters included
  if (/^[\x00-\xff]*$/.test(text))
    return chunk('tEXt', Buffer.concat([key, Buffer.from([0]), Buffer.from(text, 'latin1')]));
  // keyword, NUL, no compression (flag 0, method 0), empty language tag and translated keyword, each NUL-ended
  return chunk('iTXt', Buffer.concat([key, Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]));
}

/**
 * Encode RGB bytes as PNG: IHDR, the text chunks (e.g. `parameters`, where A1111 and its readers look), one IDAT, IEND.
 * Written here rather than through sharp, whose fixed cost per call (1.5-9 ms) was several UNet steps of the toy
 * model. Every row uses filter None, and zlib's settings are fixed, so equal pixels and text give equal files; level 1
 * deflates several times faster than the default level, for slightly larger files.
 */
export function encodePng(
  rgb: Uint8Array,
  width: number,
  height: number,
  text: Record<string, string> = {},
): Uint8Array {
  if (rgb.length !== width * height * 3) throw new Error(`encodePng: ${rgb.length} bytes for ${width}x${height} RGB`);
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per sample
  header[9] = 2; // colour type RGB; compression, filter method and interlace stay 0
  const stride = width * 3;
  const scanlines = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) scanlines.set(rgb.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  const texts = Object.entries(text).map(([k, v]) => textChunk(k, v));
  const idat = chunk('IDAT', deflateSync(scanlines, { level: 1 }));
  return new Uint8Array(
    Buffer.concat([SIGNATURE, chunk('IHDR', header), ...texts, idat, chunk('IEND', new Uint8Array(0))]),
  );
}

/** Images [N, H, W, 3] in [0, 1] → PNG files, each with the same text chunks. */
export function imagesToPngs(images: F32Tensor, text: Record<string, string> = {}): Uint8Array[] {
  const [, h, w] = images.shape;
  return imagesToBytes(images).map((rgb) => encodePng(rgb, w, h, text));
}

/** A keyword is any Latin-1 text, "__proto__" included: defined as an own key, never assigned to the prototype. */
function setText(out: Record<string, string>, keyword: string, text: string): void {
  Object.defineProperty(out, keyword, { value: text, enumerable: true, writable: true, configurable: true });
}

/** The tEXt and uncompressed iTXt chunks of a PNG, keyword → text; CRCs are checked. */
export function readPngText(bytes: Uint8Array): Record<string, string> {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < SIGNATURE.length || !buf.subarray(0, SIGNATURE.length).equals(SIGNATURE))
    throw new InputError('not a PNG file');
  const out: Record<string, string> = {};
  let at = SIGNATURE.length;
  while (at + 12 <= buf.length) {
    const length = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    const end = at + 8 + length;
    if (end + 4 > buf.length) throw new InputError(`PNG chunk ${type} at byte ${at} runs past the end of the file`);
    if (crc32(buf.subarray(at + 4, end)) !== buf.readUInt32BE(end))
      throw new InputError(`PNG chunk ${type} at byte ${at}: bad CRC`);
    const data = buf.subarray(at + 8, end);
    const nul = data.indexOf(0);
    if (type === 'tEXt' && nul > 0) setText(out, data.toString('latin1', 0, nul), data.toString('latin1', nul + 1));
    if (type === 'iTXt' && nul > 0 && data[nul + 1] === 0) {
      const langEnd = data.indexOf(0, nul + 3);
      const keyEnd = data.indexOf(0, langEnd + 1);
      setText(out, data.toString('latin1', 0, nul), data.toString('utf8', keyEnd + 1));
    }
    if (type === 'IEND') break;
    at = end + 4;
  }
  return out;
}

/**
 * The same PNG with its text chunks of these keywords replaced (or added after IHDR); pixels stay as they are,
 * nothing is re-encoded.
 */
export function withPngText(bytes: Uint8Array, text: Record<string, string>): Uint8Array {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!buf.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('not a PNG file');
  const parts: Buffer[] = [SIGNATURE];
  let at = SIGNATURE.length;
  while (at + 12 <= buf.length) {
    const type = buf.toString('latin1', at + 4, at + 8);
    const end = at + 12 + buf.readUInt32BE(at);
    const data = buf.subarray(at + 8, end - 4);
    const keyword = data.toString('latin1', 0, Math.max(0, data.indexOf(0)));
    const replaced = (type === 'tEXt' || type === 'iTXt') && keyword in text;
    if (!replaced) parts.push(buf.subarray(at, end));
    if (type === 'IHDR') parts.push(...Object.entries(text).map(([k, v]) => textChunk(k, v)));
    at = end;
  }
  return new Uint8Array(Buffer.concat(parts));
}
