// One BPF object file: opened with a pin root (maps declared LIBBPF_PIN_BY_NAME are pinned there,
// or reused from there when already pinned, so their contents survive an agent restart), loaded
// with the verifier log kept for errors, and its programs and maps looked up by name.

import koffi from 'koffi'
import { cString } from '../lib/libc.js'
import {
  addressOf,
  BpfError,
  check,
  clearLibbpfMessages,
  errnoName,
  libbpf,
  libbpfMessages,
  OPEN_OPTS,
  privilegeHint,
} from './libbpf.js'

const PERCPU_TYPES = new Set([5, 6, 10]) // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
const VERIFIER_LOG_BYTES = 1 << 20

export class BpfMap {
  readonly keySize: number
  readonly valueSize: number
  readonly maxEntries: number
  readonly percpu: boolean
  /** Bytes of one lookup result: per-CPU maps return one 8-byte-aligned value per possible CPU. */
  readonly lookupSize: number

  constructor(
    readonly name: string,
    readonly fd: number,
    handle: unknown,
  ) {
    const lib = libbpf()
    this.keySize = lib.bpf_map__key_size(handle) as number
    this.valueSize = lib.bpf_map__value_size(handle) as number
    this.maxEntries = lib.bpf_map__max_entries(handle) as number
    this.percpu = PERCPU_TYPES.has(lib.bpf_map__type(handle) as number)
    this.lookupSize = this.percpu ? Math.ceil(this.valueSize / 8) * 8 * possibleCpus() : this.valueSize
  }

  private sized(buf: Buffer, size: number, what: string): Buffer {
    if (buf.length !== size)
      throw new BpfError('ELAYOUT', `map ${this.name}: ${what} is ${buf.length} bytes, the map wants ${size}`)
    return buf
  }

  update(key: Buffer, value: Buffer, flags = 0): void {
    const rc = libbpf().bpf_map_update_elem(
      this.fd,
      this.sized(key, this.keySize, 'key'),
      this.sized(value, this.percpu ? this.lookupSize : this.valueSize, 'value'),
      flags,
    ) as number
    check(rc, 'EMAP', `update of map ${this.name}`)
  }

  lookup(key: Buffer): Buffer | null {
    const out = Buffer.alloc(this.lookupSize)
    const rc = libbpf().bpf_map_lookup_elem(this.fd, this.sized(key, this.keySize, 'key'), out) as number
    if (rc === -2) return null
    check(rc, 'EMAP', `lookup in map ${this.name}`)
    return out
  }

  /** False when the key was not there. */
  delete(key: Buffer): boolean {
    const rc = libbpf().bpf_map_delete_elem(this.fd, this.sized(key, this.keySize, 'key')) as number
    if (rc === -2) return false
    check(rc, 'EMAP', `delete from map ${this.name}`)
    return true
  }

  /** Every key, bounded by the map's own size so a racing writer cannot make it loop. */
  keys(limit = 1 << 20): Buffer[] {
    const out: Buffer[] = []
    let prev: Buffer | null = null
    for (let i = 0; i < limit; i++) {
      const next = Buffer.alloc(this.keySize)
      const rc = libbpf().bpf_map_get_next_key(this.fd, prev, next) as number
      if (rc === -2) break
      check(rc, 'EMAP', `iterating map ${this.name}`)
      out.push(next)
      prev = next
    }
    return out
  }
}

/**
 * Buffers libbpf holds raw pointers into (the pin root, the verifier log) during open and load:
 * referenced from here, so the collector cannot free them while it does.
 */
const buffersInUse = new Set<Buffer>()

let cpus: number | undefined
export function possibleCpus(): number {
  return (cpus ??= check(libbpf().libbpf_num_possible_cpus() as number, 'EMAP', 'counting possible CPUs'))
}

export class BpfObject {
  private handle: unknown
  private readonly maps = new Map<string, BpfMap>()

  private constructor(
    readonly path: string,
    handle: unknown,
  ) {
    this.handle = handle
  }

  /**
   * Opens and loads an object; maps are pinned under (or reused from) `pinRoot`, a bpffs dir.
   * `maxEntries`: sizes for the named maps, instead of the object's own.
   */
  static load(path: string, pinRoot: string, maxEntries: Readonly<Record<string, number>> = {}): BpfObject {
    const lib = libbpf()
    clearLibbpfMessages()
    const opts = Buffer.alloc(OPEN_OPTS.size)
    const pin = cString(pinRoot)
    const log = Buffer.alloc(VERIFIER_LOG_BYTES)
    buffersInUse.add(pin).add(log)
    try {
      opts.writeBigUInt64LE(BigInt(OPEN_OPTS.size), 0)
      opts.writeBigUInt64LE(addressOf(pin), OPEN_OPTS.pinRootPath)
      opts.writeBigUInt64LE(addressOf(log), OPEN_OPTS.kernelLogBuf)
      opts.writeBigUInt64LE(BigInt(log.length), OPEN_OPTS.kernelLogSize)
      const handle = lib.bpf_object__open_file(path, opts)
      if (!handle) {
        const errno = koffi.errno()
        throw new BpfError('EOPEN', `cannot open BPF object ${path}: ${errnoName(errno)}\n${libbpfMessages()}`.trim(), {
          errno,
        })
      }
      for (const [name, n] of Object.entries(maxEntries)) {
        const map = lib.bpf_object__find_map_by_name(handle, name)
        if (map) check(lib.bpf_map__set_max_entries(map, n) as number, 'EMAP', `sizing map ${name} to ${n} entries`)
      }
      const rc = lib.bpf_object__load(handle) as number
      if (rc < 0) {
        lib.bpf_object__close(handle)
        const end = log.indexOf(0)
        const verifierLog = log.toString('utf8', 0, end < 0 ? log.length : end).trim()
        throw new BpfError(
          rc === -1 ? 'EPERM' : 'ELOAD',
          `cannot load BPF object ${path}: ${errnoName(rc)}${privilegeHint(rc)}\n${libbpfMessages()}${verifierLog ? `\nverifier log:\n${verifierLog}` : ''}`.trim(),
          { errno: -rc, verifierLog },
        )
      }
      return new BpfObject(path, handle)
    } finally {
      buffersInUse.delete(pin)
      buffersInUse.delete(log)
    }
  }

  private live(): unknown {
    if (!this.handle) throw new BpfError('EMAP', `BPF object ${this.path} is closed`)
    return this.handle
  }

  programFd(name: string): number {
    const prog = libbpf().bpf_object__find_program_by_name(this.live(), name)
    if (!prog) throw new BpfError('ELOAD', `BPF object ${this.path} has no program named ${name}`)
    return check(libbpf().bpf_program__fd(prog) as number, 'ELOAD', `program ${name}`)
  }

  map(name: string): BpfMap {
    let m = this.maps.get(name)
    if (m) return m
    const handle = libbpf().bpf_object__find_map_by_name(this.live(), name)
    if (!handle) throw new BpfError('EMAP', `BPF object ${this.path} has no map named ${name}`)
    m = new BpfMap(name, check(libbpf().bpf_map__fd(handle) as number, 'EMAP', `map ${name}`), handle)
    this.maps.set(name, m)
    return m
  }

  /** Closes the object's fds. Attached programs stay attached; pinned maps stay pinned. */
  close(): void {
    if (!this.handle) return
    libbpf().bpf_object__close(this.handle)
    this.handle = null
    this.maps.clear()
  }
}
