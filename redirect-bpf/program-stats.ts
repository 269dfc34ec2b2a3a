// What the kernel counts for a loaded program while BPF run-time statistics are on: how often it
// ran and for how long. They are on while some process holds the fd bpf_enable_stats() returned
// (`l7proxy compare` does, for its runs), and read zero otherwise: counting costs two clock reads
// a run, so the agent never turns them on itself.

import { libc } from '../lib/libc.js'
import { check, libbpf, PROG_INFO } from './libbpf.js'

export interface ProgramStats {
  runs: number
  ns: number
}

const BPF_STATS_RUN_TIME = 0

/** A program's runs and run time so far, by its fd. */
export function programStats(progFd: number): ProgramStats {
  const info = Buffer.alloc(PROG_INFO.size)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(info.length)
  check(libbpf().bpf_obj_get_info_by_fd(progFd, info, len) as number, 'EMAP', "reading a BPF program's info")
  return { runs: Number(info.readBigUInt64LE(PROG_INFO.runCnt)), ns: Number(info.readBigUInt64LE(PROG_INFO.runTimeNs)) }
}

/** Turns run-time statistics on for every program of the machine; the function returned turns them off again. */
export function enableRunStats(): () => void {
  const fd = check(
    libbpf().bpf_enable_stats(BPF_STATS_RUN_TIME) as number,
    'EPERM',
    'turning BPF run-time statistics on',
  )
  return () => void libc().close(fd)
}
