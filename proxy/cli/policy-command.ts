// `l7proxy policy validate FILE...`: checks policy files offline, as the agent would load them.

import { readFileSync } from 'node:fs'
import { PolicyError } from '../../policy/errors.js'
import { parsePolicyText } from '../../policy/parse.js'
import { UsageError } from './usage-error.js'

export const POLICY_USAGE = `  policy validate FILE...    check policy files (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
                            NetworkPolicy); prints each problem as file:line:column, exit 1 if any`

/** Returns the exit code: 0 when every file is valid, 1 otherwise. */
export function policyCommand(args: string[], out: (s: string) => void, err: (s: string) => void): number {
  const [sub, ...files] = args
  if (sub === undefined) throw new UsageError("'policy' needs a subcommand: validate")
  if (sub !== 'validate') throw new UsageError(`unknown policy subcommand '${sub}' (expected validate)`)
  if (files.length === 0) throw new UsageError('policy validate: give at least one FILE')
  const unknown = files.find((f) => f.startsWith('-'))
  if (unknown) throw new UsageError(`policy validate: unknown option '${unknown}'`)
  let failed = 0
  for (const file of files) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (e) {
      err(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`)
      failed++
      continue
    }
    try {
      const rules = parsePolicyText(text, file)
      out(`${file}: ok, ${rules.length} rule${rules.length === 1 ? '' : 's'} (${rules.map((r) => r.id).join(', ') || 'no documents'})\n`)
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e
      err(`${e.message}\n`)
      failed++
    }
  }
  return failed > 0 ? 1 : 0
}
