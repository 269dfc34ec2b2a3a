// The policy files the agent enforces: one given by name, or every file of a watched directory.
// Each change is applied to the engine, then (once the datapath is up) to the kernel maps and
// every other proxy thread, and logged; a file that does not parse or validate is refused with
// where and why, and the previous policy stays in force. `import` writes a file into the
// directory (atomically) and applies it at once, taking it back out if the engine refuses it, so
// the directory holds what is enforced.

import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { writeFileAtomic } from '../../lib/atomic-write.js'
import type { PolicyEngine } from '../../policy/engine.js'
import { PolicyError } from '../../policy/errors.js'
import { parsePolicyText } from '../../policy/parse.js'
import { AdminQueryError } from './admin-server.js'
import { PolicyDirectory, type PolicyFileChange } from './policy-dir.js'

export interface PolicyFilesOptions {
  engine: PolicyEngine
  logger: Logger
  /** A file given by name: loaded now, and a bad one throws (a start-up error). */
  file: string | null
  /** A directory: its files loaded now (bad ones refused and logged), then watched by watch(). */
  dir: string | null
}

/** Where accepted changes go once the datapath is up. */
export interface PolicySinks {
  /** Writes the engine's pending changes to the kernel maps; what it wrote, for the log. */
  writeMaps: () => unknown
  tellThreads: (file: string, text: string | null) => void
  /** How long an accepted change took to apply, in seconds. */
  observe: (seconds: number) => void
}

export class PolicyFiles {
  /** The files in force and their text, as the other proxy threads must load them too. */
  readonly texts = new Map<string, string>()
  private readonly directory: PolicyDirectory | null
  private sinks: PolicySinks | null = null

  constructor(private readonly opts: PolicyFilesOptions) {
    if (opts.file) {
      const text = readFileSync(opts.file, 'utf8')
      opts.engine.loadFile(opts.file, text)
      this.texts.set(opts.file, text)
    }
    this.directory = opts.dir ? new PolicyDirectory(opts.dir) : null
    for (const c of this.directory?.scan() ?? []) this.accept(c.file, c.text)
  }

  get dir(): string | null {
    return this.directory?.dir ?? null
  }

  /** From now on, accepted changes (the directory's, imports) reach `sinks` too. */
  watch(sinks: PolicySinks): void {
    this.sinks = sinks
    this.directory?.watch((changes) => void this.apply(changes))
  }

  close(): void {
    this.directory?.close()
  }

  /** `l7proxy policy import`: refused before anything is written if it does not parse. */
  import(name: string | null, text: string): { file: string; revision: number; applyMs: number } {
    const dir = this.directory
    if (!dir)
      throw new AdminQueryError(
        'this agent enforces one policy file (--policy), not a directory: there is nowhere to import to',
      )
    if (name === null || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.ya?ml$/.test(name))
      throw new AdminQueryError(
        `'${name ?? ''}' is not a policy file name: letters, digits, '.', '_' and '-', ending in .yaml or .yml`,
      )
    try {
      parsePolicyText(text, name)
    } catch (e) {
      throw e instanceof PolicyError ? new AdminQueryError(e.message) : e
    }
    const file = join(dir.dir, name)
    const previous = existsSync(file) ? readFileSync(file, 'utf8') : null
    const started = performance.now()
    writeFileAtomic(file, text)
    const why = this.apply(dir.scan()).get(file)
    if (why !== undefined) {
      if (previous === null) rmSync(file, { force: true })
      else writeFileAtomic(file, previous)
      this.apply(dir.scan())
      throw new AdminQueryError(`${name}: ${why}`)
    }
    return { file, revision: this.opts.engine.policyRevision, applyMs: performance.now() - started }
  }

  /** A file's text (null: gone) given by the agent's owner rather than read; why it was refused, or null. */
  applyText(file: string, text: string | null): string | null {
    return this.apply([{ file, text, changedAt: Date.now() }]).get(file) ?? null
  }

  /** Applies changes one by one; returns the files refused, with why. */
  private apply(changes: readonly PolicyFileChange[]): Map<string, string> {
    const refused = new Map<string, string>()
    for (const c of changes) {
      const started = performance.now()
      const why = this.accept(c.file, c.text)
      if (why !== null) {
        refused.set(c.file, why)
        continue
      }
      const written = this.sinks?.writeMaps()
      this.sinks?.tellThreads(c.file, c.text)
      this.sinks?.observe((performance.now() - started) / 1000)
      this.opts.logger.info(
        {
          file: c.file,
          revision: this.opts.engine.policyRevision,
          applyMs: performance.now() - started,
          sinceFileChangeMs: Date.now() - c.changedAt,
          maps: written,
        },
        c.text === null ? 'policy removed' : 'policy applied',
      )
    }
    return refused
  }

  /** One file's change, to the engine only; why it was refused (and logged), or null. */
  private accept(file: string, text: string | null): string | null {
    if (text === null && !this.texts.has(file)) return 'not in force' // a refused file went away: nothing was in force
    try {
      if (text === null) this.opts.engine.removeFile(file)
      else this.opts.engine.loadFile(file, text)
    } catch (e) {
      this.opts.logger.error(
        { file, error: (e as Error).message },
        'policy file refused; the previous policy stays in force',
      )
      return (e as Error).message
    }
    if (text === null) this.texts.delete(file)
    else this.texts.set(file, text)
    return null
  }
}
