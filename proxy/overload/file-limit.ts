// The agent's open-file limit, raised at start: every proxied connection holds two files, and a
// limit reached stalls accepts for everyone (the node's connection budget is set well under it).

import { type FileLimit, fileLimit, setFileLimit, systemFileCeiling } from '../../lib/libc.js'

/**
 * Raises the limit toward `wanted` (0: the most the host allows, fs.nr_open): soft and hard when
 * the process may (CAP_SYS_RESOURCE), else the soft limit up to the hard one. Never lowers it.
 * The limit in force after.
 */
export function raiseFileLimit(wanted: number): FileLimit {
  const now = fileLimit()
  const target = wanted > 0 ? Math.min(wanted, systemFileCeiling()) : systemFileCeiling()
  if (now.soft >= target) return now
  if (target > now.hard && setFileLimit({ soft: target, hard: target })) return fileLimit()
  const soft = Math.min(target, now.hard)
  if (soft > now.soft) setFileLimit({ soft, hard: now.hard })
  return fileLimit()
}
