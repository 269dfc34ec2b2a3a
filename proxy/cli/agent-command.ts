// `l7proxy agent`: the node agent on a lab, in the foreground. It brings the lab up if it is not,
// then runs the agent process (proxy/agent/lab-node.ts) inside the lab's node namespace with the
// policy directory watched, and stops it (datapath removed, lab left up) on Ctrl-C or SIGTERM.

import { spawn } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import { DEFAULT_LAB, labUp } from '../../lab/lab.js'
import { findHost, isValidLabName, nodeNetns } from '../../lab/topology.js'
import { distPath, projectRoot } from '../../lib/project-root.js'
import { REDIRECT_MODES, type RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { agentSocketPath } from '../agent/admin-socket.js'
import { UsageError } from './usage-error.js'

export const AGENT_USAGE = `  agent [--lab NAME] [--mode M] [--policy-dir DIR] [--threads N]
                            run the node agent on a lab (brought up if needed) in the foreground:
                            the datapath in mode M (${REDIRECT_MODES.join(', ')}; default sk-assign),
                            the HTTP proxy on N threads (default: one per core), and every policy
                            file in DIR (default: the examples), applied live as files change`

export async function agentCommand(args: string[], out: (s: string) => void): Promise<number> {
  let values: { lab?: string; mode?: string; 'policy-dir'?: string; threads?: string }
  try {
    ;({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { lab: { type: 'string' }, mode: { type: 'string' }, 'policy-dir': { type: 'string' }, threads: { type: 'string' } },
    }))
  } catch (e) {
    throw new UsageError(`agent: ${(e as Error).message}`)
  }
  const lab = values.lab ?? DEFAULT_LAB
  if (!isValidLabName(lab)) throw new UsageError(`agent: invalid --lab '${lab}': use 1-16 characters from a-z and 0-9`)
  const mode = (values.mode ?? 'sk-assign') as RedirectMode
  if (!REDIRECT_MODES.includes(mode)) throw new UsageError(`agent: unknown --mode '${values.mode}' (expected one of: ${REDIRECT_MODES.join(', ')})`)
  const dir = values['policy-dir'] ?? `${projectRoot()}/policy/examples`
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`agent: --policy-dir '${dir}' is not a directory`)
  const threads = Number(values.threads ?? availableParallelism())
  if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new UsageError(`agent: --threads must be a whole number from 1 to 64, not '${values.threads}'`)

  const { created } = await labUp(lab)
  out(`${created ? 'brought lab' : 'lab'} '${lab}' up; starting the agent (${mode}, policies in ${dir})\n`)
  // By address: the example's DNS rule steers the pods' lookups to the DNS proxy, which is not
  // there yet (issue 7), and steered traffic without a proxy is dropped.
  const deathstar = findHost('deathstar').addresses[0]!
  out(`try: ip netns exec l7lab-${lab}-tiefighter curl -s -XPOST http://${deathstar}/v1/request-landing\n`)
  out(`     ip netns exec l7lab-${lab}-tiefighter curl -s -XPUT http://${deathstar}/v1/exhaust-port\n`)
  const argv = ['netns', 'exec', nodeNetns(lab), process.execPath, distPath('proxy/agent/lab-node.js'), '--mode', mode, '--policy-dir', dir, '--pin', `/run/l7proxy/agent-bpffs-${lab}`, '--threads', String(threads), '--admin', agentSocketPath(lab)]
  if (mode === 'sockmap') argv.push('--sockmap-cgroup', `l7proxy-${lab}`)
  const child = spawn('ip', argv, { stdio: ['ignore', 'inherit', 'inherit'] })
  // Ctrl-C reaches the agent through the terminal's process group; a SIGTERM sent to this
  // process alone is passed on.
  const forward = (sig: NodeJS.Signals): void => void child.kill(sig)
  process.on('SIGTERM', forward)
  process.on('SIGINT', () => undefined)
  const code = await new Promise<number>((resolve) => child.once('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' || sig === 'SIGTERM' ? 0 : 1))))
  process.off('SIGTERM', forward)
  return code
}
