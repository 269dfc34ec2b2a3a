// Thin, bounded wrappers over iproute2 (`ip`, `ss`) for network namespaces. Every call has a
// timeout; every failure says which command failed and what it printed.

import { execFile, spawn } from 'node:child_process'
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { LabError } from './errors.js'

const DEFAULT_TIMEOUT_MS = 10_000

export interface ExecResult {
  code: number
  stdout: string
  stderr: string
}

export interface ExecOptions {
  timeoutMs?: number
  /** Written to the command's stdin, then stdin is closed. */
  input?: string
}

/** Runs a command, never throws for a non-zero exit: the caller reads `code`. */
export function execCommand(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          if (err.code === 'ENOENT') return reject(new LabError('ENOCMD', `command not found: ${argv[0]}`))
          if (err.killed) {
            return reject(
              new LabError('ECMD', `timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms: ${argv.join(' ')}`),
            )
          }
          return reject(new LabError('ECMD', `${argv.join(' ')}: ${err.message}`))
        }
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr })
      },
    )
    if (opts.input !== undefined) child.stdin?.end(opts.input)
    else child.stdin?.end()
  })
}

/** Runs a command that must succeed; returns its stdout. */
export async function run(argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
  const r = await execCommand(argv, opts)
  if (r.code !== 0) {
    throw new LabError('ECMD', `'${argv.join(' ')}' exited ${r.code}: ${(r.stderr || r.stdout).trim()}`)
  }
  return r.stdout
}

export function findExecutable(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const p = join(dir, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not in this directory
    }
  }
  return null
}

export async function listNetns(): Promise<string[]> {
  const out = await run(['ip', 'netns', 'list'])
  // Lines look like "name" or "name (id: 3)".
  return out
    .split('\n')
    .map((l) => l.split(' ')[0]!.trim())
    .filter((l) => l.length > 0)
}

export async function netnsPids(ns: string): Promise<number[]> {
  const r = await execCommand(['ip', 'netns', 'pids', ns])
  if (r.code !== 0) return []
  return r.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0)
}

export function execIn(ns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return execCommand(['ip', 'netns', 'exec', ns, ...argv], opts)
}

export function runIn(ns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts)
}

/**
 * The command that runs `argv` inside `ns`; with `cgroup` (a cgroup2 directory) its process joins
 * that group first, so whatever it starts is in it from its first socket on.
 */
export function netnsArgv(ns: string, argv: readonly string[], cgroup: string | null = null): string[] {
  if (cgroup === null) return ['ip', 'netns', 'exec', ns, ...argv]
  return [
    'sh',
    '-c',
    'cg=$0 ns=$1; shift; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$ns" "$@"',
    cgroup,
    ns,
    ...argv,
  ]
}

/** Starts a long-running process inside `ns` (and `cgroup`), detached from us, output appended to `logFile`. */
export function spawnDetachedIn(
  ns: string,
  argv: readonly string[],
  logFile: string,
  cgroup: string | null = null,
): Promise<number> {
  const out = openSync(logFile, 'a')
  try {
    const [cmd, ...args] = netnsArgv(ns, argv, cgroup)
    const child = spawn(cmd!, args, { detached: true, stdio: ['ignore', out, out] })
    return new Promise((resolve, reject) => {
      child.once('error', (err) =>
        reject(new LabError('ENOCMD', `cannot start '${argv.join(' ')}' in ${ns}: ${err.message}`)),
      )
      child.once('spawn', () => {
        child.unref()
        resolve(child.pid!)
      })
    })
  } finally {
    closeSync(out)
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Ends a process we started: SIGTERM, then SIGKILL after 5 s. */
export async function stopProcess(pid: number): Promise<void> {
  if (!isAlive(pid)) return
  process.kill(pid, 'SIGTERM')
  for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((res) => setTimeout(res, 50))
  if (isAlive(pid)) process.kill(pid, 'SIGKILL')
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

export interface ListenWait {
  /** null: this process's own namespace. */
  ns: string | null
  port: number
  proto: 'tcp' | 'udp'
  pid: number
  logFile: string
  what: string
  timeoutMs?: number
}

/** Waits until something listens on `port` in `ns`, failing early if the server process died. */
export async function waitListening(w: ListenWait): Promise<void> {
  const deadline = Date.now() + (w.timeoutMs ?? 15_000)
  const suffix = `:${w.port}`
  while (Date.now() < deadline) {
    if (!isAlive(w.pid)) {
      throw new LabError(
        'ESERVER',
        `${w.what} exited before listening on ${w.proto}/${w.port}; its log:\n${tail(w.logFile)}`,
      )
    }
    const out = await run(['ss', ...(w.ns === null ? [] : ['-N', w.ns]), '-Hln', w.proto === 'tcp' ? '-t' : '-u'])
    if (out.split('\n').some((l) => l.split(/\s+/).some((col) => col.endsWith(suffix)))) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new LabError(
    'ESERVER',
    `${w.what} did not listen on ${w.proto}/${w.port} within ${w.timeoutMs ?? 15_000} ms; its log:\n${tail(w.logFile)}`,
  )
}
