// The name generator (servers/name-generator.ts) started in a lab's DNS pod, for what needs
// names that churn: bench:fqdn and the toFQDNs scale tests. It answers on GENERATED_NAMES.port
// of the pod's address until stopped (or the lab goes down). Also the policy that lets the
// tiefighter ask it and reach what it answers.

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
  const pid = await spawnDetachedIn(
    ns,
    [
      process.execPath,
      distPath('lab/servers/run.js'),
      'names',
      '--name',
      'names',
      '--port',
      String(GENERATED_NAMES.port),
    ],
    log,
  )
  await waitListening({ ns, port: GENERATED_NAMES.port, proto: 'udp', pid, logFile: log, what: 'the name generator' })
  return { pid, stop: () => stopProcess(pid) }
}

/**
 * The tiefighter may ask the generator and reach port 80 of its range: `learn`, through the DNS
 * proxy (a DNS rule) and toFQDNs on what it answers; otherwise an L4 allow and a toCIDR of the
 * whole range (no proxy, nothing learned).
 */
export function generatedNamesPolicy(learn: boolean): string {
  const dns = learn ? `\n      rules: { dns: [ { matchPattern: "*.${GENERATED_NAMES.zone}" } ] }` : ''
  const to = learn
    ? `toFQDNs: [ { matchPattern: "*.${GENERATED_NAMES.zone}" } ]`
    : `toCIDR: [ ${GENERATED_NAMES.range} ]`
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: generated-names }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "${GENERATED_NAMES.port}", protocol: UDP } ]${dns}
  - ${to}
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
`
}
