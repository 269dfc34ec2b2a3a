// llhttp compiled to WebAssembly, as undici ships it (the parser behind undici's client), kept in
// vendor/llhttp/ so that an undici release cannot move it (its README: origin, hashes). One
// instance per thread; llhttp_execute runs synchronously, so its callbacks go to the one parser
// being run (`current`). Input is copied into the instance's memory, and spans handed to the
// callbacks are offsets into it. Calls between JS and WebAssembly cost a few ns, where node's
// native parser pays a C++-to-JS callback (with its async-hooks scope) per event.

import { Buffer } from 'node:buffer'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { projectRoot } from '../../lib/project-root.js'
import type { Latin1Buffer } from './head-fields.js'

/** What llhttp calls back; a non-zero return is an error (on_headers_complete: 1 = no body). */
export interface LlhttpHandler {
  onMessageBegin(): number
  onUrl(at: number, len: number): number
  onStatus(at: number, len: number): number
  onHeaderField(at: number, len: number): number
  onHeaderValue(at: number, len: number): number
  onHeadersComplete(status: number, upgrade: number, keepAlive: number): number
  onBody(at: number, len: number): number
  onMessageComplete(): number
}

/** The part of the WebAssembly API used here (the project's TS libs leave out the DOM's types). */
interface Wasm {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { exports: unknown }
}
const WA = (globalThis as unknown as { WebAssembly: Wasm }).WebAssembly

interface Exports {
  memory: { buffer: ArrayBuffer }
  malloc(size: number): number
  llhttp_alloc(type: number): number
  llhttp_free(p: number): void
  llhttp_reset(p: number): void
  llhttp_execute(p: number, data: number, len: number): number
  llhttp_finish(p: number): number
  llhttp_get_method(p: number): number
  llhttp_get_http_major(p: number): number
  llhttp_get_http_minor(p: number): number
  llhttp_get_error_reason(p: number): number
  llhttp_errno_name(err: number): number
  llhttp_method_name(method: number): number
}

export const REQUEST = 1
export const RESPONSE = 2
/** After the head of a message that upgrades the protocol: the rest is not HTTP/1.1. */
export const PAUSED_UPGRADE = 22
/** Bytes copied in per execute. */
export const INPUT_BYTES = 64 * 1024

const wasm = (name: string): Buffer => readFileSync(join(projectRoot(), 'vendor/llhttp', name))

function compile(): object {
  try {
    return new WA.Module(wasm('llhttp_simd.wasm'))
  } catch {
    // No SIMD in this runtime: the plain build.
    return new WA.Module(wasm('llhttp.wasm'))
  }
}

export class Llhttp {
  readonly fn: Exports
  /** The instance's memory; replaced when it grows (only allocations grow it). */
  mem: Latin1Buffer
  current: LlhttpHandler | null = null
  /** Where input is copied for execute. */
  readonly input: number
  private readonly methods: string[] = []

  constructor() {
    const on = (): LlhttpHandler => this.current!
    const instance = new WA.Instance(compile(), {
      env: {
        wasm_on_message_begin: () => on().onMessageBegin(),
        wasm_on_url: (_p: number, at: number, len: number) => on().onUrl(at, len),
        wasm_on_status: (_p: number, at: number, len: number) => on().onStatus(at, len),
        wasm_on_header_field: (_p: number, at: number, len: number) => on().onHeaderField(at, len),
        wasm_on_header_value: (_p: number, at: number, len: number) => on().onHeaderValue(at, len),
        wasm_on_headers_complete: (_p: number, status: number, upgrade: number, keepAlive: number) =>
          on().onHeadersComplete(status, upgrade, keepAlive),
        wasm_on_body: (_p: number, at: number, len: number) => on().onBody(at, len),
        wasm_on_message_complete: () => on().onMessageComplete(),
      },
    })
    this.fn = instance.exports as unknown as Exports
    this.input = this.fn.malloc(INPUT_BYTES)
    this.mem = Buffer.from(this.fn.memory.buffer) as Latin1Buffer
  }

  alloc(type: number): number {
    const p = this.fn.llhttp_alloc(type)
    if (this.mem.buffer !== this.fn.memory.buffer) this.mem = Buffer.from(this.fn.memory.buffer) as Latin1Buffer
    return p
  }

  /** A request's method name, by llhttp's number for it. */
  method(p: number): string {
    const m = this.fn.llhttp_get_method(p)
    return (this.methods[m] ??= this.cString(this.fn.llhttp_method_name(m)))
  }

  /** llhttp's name for an error (HPE_...) and its reason. */
  error(p: number, err: number): { code: string; reason: string } {
    return {
      code: this.cString(this.fn.llhttp_errno_name(err)),
      reason: this.cString(this.fn.llhttp_get_error_reason(p)),
    }
  }

  latin1(at: number, len: number): string {
    return this.mem.latin1Slice(at, at + len)
  }

  private cString(at: number): string {
    if (at === 0) return ''
    const end = this.mem.indexOf(0, at)
    return this.mem.latin1Slice(at, end < 0 ? at : end)
  }
}

let instance: Llhttp | null = null

/** This thread's instance. */
export function llhttp(): Llhttp {
  return (instance ??= new Llhttp())
}
