// A plain TCP socket's native handle (libuv's stream, as node's stream_wrap binding exposes it)
// and how node:net itself reads and writes it (lib/internal/stream_base_commons.js): the HTTP/1.1
// proxy drives sockets this way, without net.Socket's Readable and Writable per read and write.
// Node internals: this file is the only place that knows them (http1-parser.ts reads through
// it, socket-writer.ts writes); their tests would catch a Node release that changed them.

import type { Socket } from 'node:net'
import { TLSSocket } from 'node:tls'

/** A write request: node's WriteWrap. */
export interface WriteReq {
  /** Called by libuv's write callback for a write that did not complete at once (status < 0: failed). */
  oncomplete: (status: number) => void
  /** What a write still in libuv's queue holds, kept alive with it. */
  data: string | Buffer | Array<string | Buffer> | null
}

export interface NativeStream {
  /** net's own flag for whether it is reading; kept in step by whoever starts and stops reads. */
  reading: boolean
  readStart(): number
  readStop(): number
  /** Reads go into `buf` (one the caller keeps), and onread gets only their length. */
  useUserBuffer(buf: Uint8Array): void
  /** Called after every read: its length (or a negative error, or EOF) in readResult(). */
  onread: (this: NativeStream, ab: ArrayBuffer | undefined) => unknown
  /** Bytes written and not yet taken by the kernel. */
  readonly writeQueueSize: number
  writeLatin1String(req: WriteReq, s: string): number
  writeBuffer(req: WriteReq, b: Buffer): number
  /** `chunks`: [data, encoding, data, encoding...], or only Buffers when `allBuffers`. */
  writev(req: WriteReq, chunks: Array<string | Buffer>, allBuffers: boolean): number
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq
  streamBaseState: Int32Array
  kReadBytesOrError: number
  kLastWriteWasAsync: number
}

const binding = (process as unknown as { binding(name: 'stream_wrap'): StreamWrapBinding }).binding('stream_wrap')
const { streamBaseState, kReadBytesOrError, kLastWriteWasAsync } = binding

export const WriteWrap = binding.WriteWrap

/** The native handle of a plain TCP socket (null for a TLS socket, whose handle takes ciphertext, or one with none yet). */
export function nativeStream(socket: Socket): NativeStream | null {
  if (socket instanceof TLSSocket) return null
  const handle = (socket as unknown as { _handle: (NativeStream & { isStreamBase?: boolean }) | null })._handle
  return handle?.isStreamBase === true && typeof handle.useUserBuffer === 'function' ? handle : null
}

/** In onread: the bytes read, 0, or a negative libuv error (EOF among them). */
export function readResult(): number {
  return streamBaseState[kReadBytesOrError]!
}

/** Right after a write call: whether libuv queued part of it (its request then completes later). */
export function lastWriteWasAsync(): boolean {
  return streamBaseState[kLastWriteWasAsync] !== 0
}
