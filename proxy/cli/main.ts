#!/usr/bin/env node

// The `l7proxy` command. Subcommands live in their own modules; this file parses the first word,
// prints usage, and turns errors into exit codes: 2 for a bad command line, 1 for a failure.

import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { ConfigError } from '../agent/config.js'
import { AGENT_USAGE, agentCommand } from './agent-command.js'
import { AGENT_QUERY_USAGE, agentQueryCommand } from './agent-query-command.js'
import { CERTS_USAGE, certsCommand } from './certs-command.js'
import { CNI_USAGE, cniCommand } from './cni-command.js'
import { COMPARE_USAGE } from './compare-usage.js'
import { LAB_USAGE, labCommand } from './lab-command.js'
import { POLICY_USAGE, policyCommand } from './policy-command.js'
import { UsageError } from './usage-error.js'

const USAGE = `Usage: l7proxy <command> [options]

Commands:
${AGENT_USAGE}
${AGENT_QUERY_USAGE}
${CERTS_USAGE}
${CNI_USAGE}
${COMPARE_USAGE}
${LAB_USAGE}
${POLICY_USAGE}
  help                      show this text
`

/**
 * The usage of one command: the entries of USAGE that begin with it (an entry is a line indented
 * by two, then the lines indented deeper); null when there is none.
 */
function commandUsage(cmd: string): string | null {
  const entries = USAGE.split(/\n(?= {2}\S)/).slice(1)
  const mine = entries.filter((e) => e.trimStart().split(/\s/)[0] === cmd)
  return mine.length === 0 ? null : `Usage: l7proxy ${cmd} ...\n\n${mine.map((e) => e.trimEnd()).join('\n')}\n`
}

function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')
}

export async function main(
  argv: string[],
  out = (s: string) => void process.stdout.write(s),
  err = (s: string) => void process.stderr.write(s),
): Promise<number> {
  const [cmd, ...rest] = argv
  // `l7proxy CMD --help` (wherever the flag is): that command's usage.
  const usage = cmd !== undefined && (rest.includes('--help') || rest.includes('-h')) ? commandUsage(cmd) : null
  if (usage !== null) {
    out(usage)
    return 0
  }
  try {
    switch (cmd) {
      case 'agent':
        return await agentCommand(rest, out)
      case 'status':
      case 'endpoint':
      case 'identity':
      case 'fqdn':
      case 'bpf':
      case 'metrics':
      case 'flows':
        return await agentQueryCommand(cmd, rest, out)
      case 'compare':
        // A benchmark, loaded only when asked for (bench/ is not part of the product).
        return await (await import('../../bench/compare/compare.js')).runCompare(rest, out, err)
      case 'certs':
        return await certsCommand(rest, out)
      case 'cni':
        return cniCommand(rest, out)
      case 'lab':
        await labCommand(rest, out)
        return 0
      case 'policy':
        return await policyCommand(rest, out, err)
      case 'help':
      case '--help':
      case '-h':
        out(USAGE)
        return 0
      case undefined:
        throw new UsageError('no command given')
      default:
        throw new UsageError(`unknown command '${cmd}'`)
    }
  } catch (e) {
    if (e instanceof UsageError || isParseArgsError(e)) {
      err(`l7proxy: error: ${(e as Error).message}\n\n${USAGE}`)
      return 2
    }
    if (e instanceof ConfigError) {
      err(`l7proxy: bad configuration, nothing started:\n${e.message}\n`)
      return 2
    }
    // Every subsystem's error (the agent's, the lab's, the loader's, the CA's...): what failed, its code.
    if (e instanceof L7ProxyError) {
      err(`l7proxy: ${e.message} [${e.code}]\n`)
      return 1
    }
    err(`l7proxy: unexpected error: ${(e as Error).stack ?? String(e)}\n`)
    return 1
  }
}

process.exitCode = await main(process.argv.slice(2))
