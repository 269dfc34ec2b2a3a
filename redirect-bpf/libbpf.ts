// The system's libbpf (libbpf.so.1), through koffi (the libc calls beside it: lib/libc.ts).
// Option structs are built as raw bytes at offsets checked against a compiled C sizeof/offsetof
// (test/libbpf-abi.test.ts), so a layout mistake is caught by a test, not by a crash.

import koffi, { type LibraryHandle } from 'koffi'
import { L7ProxyError } from '../lib/l7proxy-error.js'
import { libc } from '../lib/libc.js'

export type BpfErrorCode =
  | 'ENOLIBBPF'
  | 'EOPEN'
  | 'ELOAD'
  | 'EATTACH'
  | 'EMAP'
  | 'EPERM'
  | 'ELAYOUT'
  | 'ENETNS'
  | 'EMOUNT'

export class BpfError extends L7ProxyError {
  declare readonly code: BpfErrorCode
  /** errno from the failing call, when there was one. */
  readonly errno: number | undefined
  /** The kernel verifier's log, for load failures. */
  readonly verifierLog: string | undefined
  constructor(code: BpfErrorCode, message: string, opts: { errno?: number; verifierLog?: string } = {}) {
    super(code, message)
    this.errno = opts.errno
    this.verifierLog = opts.verifierLog
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  7: 'E2BIG',
  9: 'EBADF',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  17: 'EEXIST',
  22: 'EINVAL',
  28: 'ENOSPC',
  95: 'EOPNOTSUPP',
  98: 'EADDRINUSE',
  99: 'EADDRNOTAVAIL',
  524: 'ENOTSUPP',
}

export function errnoName(errno: number): string {
  return ERRNO_NAMES[Math.abs(errno)] ?? `errno ${Math.abs(errno)}`
}

/** EPERM means a missing privilege: say which. (EACCES from a program load is the verifier.) */
export function privilegeHint(errno: number): string {
  return Math.abs(errno) === 1 ? ' (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)' : ''
}

// libbpf 1.1 layouts (bytes), as C compiles them on x86_64 and arm64.
export const OPEN_OPTS = { size: 80, pinRootPath: 24, kernelLogBuf: 56, kernelLogSize: 64, kernelLogLevel: 72 } as const
export const TC_HOOK = { size: 24, ifindex: 8, attachPoint: 12, parent: 16 } as const
export const TC_OPTS = { size: 32, progFd: 8, flags: 12, progId: 16, handle: 20, priority: 24 } as const
export const BPF_TC_INGRESS = 1
export const BPF_TC_EGRESS = 2
export const BPF_TC_F_REPLACE = 1
/** struct bpf_prog_info (uapi): where its name and run statistics sit. */
export const PROG_INFO = { size: 232, name: 64, runTimeNs: 192, runCnt: 200 } as const

type Fn = (...args: unknown[]) => unknown

export interface Libbpf {
  bpf_object__open_file: Fn
  bpf_object__load: Fn
  bpf_object__close: Fn
  bpf_object__find_program_by_name: Fn
  bpf_object__find_map_by_name: Fn
  bpf_program__fd: Fn
  bpf_map__fd: Fn
  bpf_map__key_size: Fn
  bpf_map__value_size: Fn
  bpf_map__type: Fn
  bpf_map__max_entries: Fn
  bpf_map__set_max_entries: Fn
  bpf_tc_hook_create: Fn
  bpf_tc_hook_destroy: Fn
  bpf_tc_attach: Fn
  bpf_tc_detach: Fn
  bpf_tc_query: Fn
  bpf_map_update_elem: Fn
  bpf_map_lookup_elem: Fn
  bpf_map_delete_elem: Fn
  bpf_map_get_next_key: Fn
  bpf_obj_get: Fn
  bpf_prog_attach: Fn
  bpf_prog_detach2: Fn
  bpf_link_create: Fn
  bpf_obj_get_info_by_fd: Fn
  bpf_enable_stats: Fn
  libbpf_num_possible_cpus: Fn
  libbpf_set_print: Fn
}

let cached: Libbpf | undefined
const LIBBPF_WARN = 0
/** Recent libbpf warnings, attached to the errors they explain. */
const recent: string[] = []

export function libbpfMessages(): string {
  return recent.join('')
}

export function clearLibbpfMessages(): void {
  recent.length = 0
}

export function libbpf(): Libbpf {
  if (cached) return cached
  let lib: LibraryHandle
  try {
    lib = koffi.load('libbpf.so.1')
  } catch (e) {
    throw new BpfError(
      'ENOLIBBPF',
      `cannot load libbpf.so.1: ${(e as Error).message}; install Debian package libbpf1 (scripts/setup.sh does)`,
    )
  }
  const f = (l: LibraryHandle, decl: string): Fn => l.func(decl) as Fn
  const api: Libbpf = {
    bpf_object__open_file: f(lib, 'void *bpf_object__open_file(const char *path, void *opts)'),
    bpf_object__load: f(lib, 'int bpf_object__load(void *obj)'),
    bpf_object__close: f(lib, 'void bpf_object__close(void *obj)'),
    bpf_object__find_program_by_name: f(lib, 'void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    bpf_object__find_map_by_name: f(lib, 'void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    bpf_program__fd: f(lib, 'int bpf_program__fd(void *prog)'),
    bpf_map__fd: f(lib, 'int bpf_map__fd(void *map)'),
    bpf_map__key_size: f(lib, 'uint32_t bpf_map__key_size(void *map)'),
    bpf_map__value_size: f(lib, 'uint32_t bpf_map__value_size(void *map)'),
    bpf_map__type: f(lib, 'int bpf_map__type(void *map)'),
    bpf_map__max_entries: f(lib, 'uint32_t bpf_map__max_entries(void *map)'),
    bpf_map__set_max_entries: f(lib, 'int bpf_map__set_max_entries(void *map, uint32_t max_entries)'),
    bpf_tc_hook_create: f(lib, 'int bpf_tc_hook_create(void *hook)'),
    bpf_tc_hook_destroy: f(lib, 'int bpf_tc_hook_destroy(void *hook)'),
    bpf_tc_attach: f(lib, 'int bpf_tc_attach(void *hook, void *opts)'),
    bpf_tc_detach: f(lib, 'int bpf_tc_detach(void *hook, void *opts)'),
    bpf_tc_query: f(lib, 'int bpf_tc_query(void *hook, void *opts)'),
    bpf_map_update_elem: f(lib, 'int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)'),
    bpf_map_lookup_elem: f(lib, 'int bpf_map_lookup_elem(int fd, void *key, void *value)'),
    bpf_map_delete_elem: f(lib, 'int bpf_map_delete_elem(int fd, void *key)'),
    bpf_map_get_next_key: f(lib, 'int bpf_map_get_next_key(int fd, void *key, void *next_key)'),
    bpf_obj_get: f(lib, 'int bpf_obj_get(const char *path)'),
    bpf_prog_attach: f(lib, 'int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)'),
    bpf_prog_detach2: f(lib, 'int bpf_prog_detach2(int prog_fd, int attachable_fd, int type)'),
    bpf_link_create: f(lib, 'int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)'),
    bpf_obj_get_info_by_fd: f(lib, 'int bpf_obj_get_info_by_fd(int fd, void *info, uint32_t *info_len)'),
    bpf_enable_stats: f(lib, 'int bpf_enable_stats(int type)'),
    libbpf_num_possible_cpus: f(lib, 'int libbpf_num_possible_cpus()'),
    libbpf_set_print: f(lib, 'void *libbpf_set_print(void *fn)'),
  }
  // libbpf's messages go into `recent` (bounded) instead of stderr, to be put in errors.
  const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *ap)')
  const buf = Buffer.alloc(4096)
  const cb = koffi.register((level: number, fmt: string, ap: unknown) => {
    if (level > LIBBPF_WARN) return 0 // info and debug lines would drown the one that matters
    const n = libc().vsnprintf(buf, buf.length, fmt, ap) as number
    recent.push(buf.toString('utf8', 0, Math.max(0, Math.min(n, buf.length - 1))))
    if (recent.length > 64) recent.splice(0, recent.length - 64)
    return 0
  }, koffi.pointer(PrintFn))
  api.libbpf_set_print(cb)
  cached = api
  return api
}

export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf) as bigint
}

/** Throws a BpfError for a negative libbpf return (which is -errno). */
export function check(rc: number, code: BpfErrorCode, what: string): number {
  if (rc < 0) throw new BpfError(code, `${what}: ${errnoName(rc)}${privilegeHint(rc)}`, { errno: -rc })
  return rc
}
