// The name generator (servers/name-generator.ts) started in a lab's DNS pod, for what needs
// names that churn: bench:fqdn and the toFQDNs scale tests. It answers on GENERATED_NAMES.port
// of the pod's address until stopped (or the lab goes down).

import { join } from 'node:path'
import { distPath } from '../lib/project-root.js'
import { spawnDetachedIn, stopProcess, waitListening } from './netns.js'
import { GENERATED_NAMES, hostNetns } from './topology.js'

export interface GeneratedNames {
  readonly pid: number
  stop(): Promise<void>
}

export async function startGeneratedNames(lab: string, logDir: string): Promise<GeneratedNames> {
  const ns = hostNetns(lab, 'dns')
  const log = join(logDir, 'name-generator.log')
  const pid = await spawnDetachedIn(ns, [process.execPath, distPath('lab/servers/run.js'), 'names', '--name', 'names', '--port', String(GENERATED_NAMES.port)], log)
  await waitListening({ ns, port: GENERATED_NAMES.port, proto: 'udp', pid, logFile: log, what: 'the name generator' })
  return { pid, stop: () => stopProcess(pid) }
}
