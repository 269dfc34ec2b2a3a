// A cluster in the lab: three node namespaces on an underlay, an agent on each sharing the lab's
// etcd, the star-wars pods spread so that every flow crosses a node (tiefighter on node 1, xwing
// on node 3, the servers on node 2). The policy is imported once into the cluster and every node
// enforces it: ingress L7 on the destination's node, egress L7 on the source's, each with the
// remote pod's own identity. Then the faults: etcd stopped (degraded, nothing opens or closes,
// an endpoint whose labels change meanwhile holds reserved:init), etcd back (all current, the
// new identity everywhere), an agent killed with -9 (its pods leave the others' view when its
// lease expires) and restarted (its keys back).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { labEtcd } from '../lab/lab.js'
import { type LabNode, startLabNode } from '../lab/node-agent.js'
import { labEndpointsOn, nodeIfname } from '../lab/topology.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import type { ClusterStatus } from '../proxy/kvstore/cluster-node.js'
import { documentedJson, undocumentedFields } from './fixtures/cli-json.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'
import { waitUntil } from './fixtures/wait.js'

const NODES = 3
const LANDING = 'http://198.18.2.10/v1/request-landing'
const PERMISSION_DENIED = 7

interface Cluster {
  lab: LabHandle
  dir: string
  agents: LabNode[]
  sockets: string[]
  /** Starts (again) the agent of node k. */
  start(k: number): Promise<LabNode>
  status(k: number): Promise<{ cluster: ClusterStatus }>
  http(host: string, method: string, url: string): Promise<string>
}

/** The lab of three nodes, an agent on each (no local policy), the star-wars policy imported into the cluster. */
async function cluster(t: Test, mode: string, o: { endpointsFile3?: (dir: string) => string } = {}): Promise<Cluster> {
  const lab = await useLab(t, { nodes: NODES })
  const dir = mkdtempSync(join(tmpdir(), 'l7-cluster-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const empty = join(dir, 'none.yaml')
  writeFileSync(empty, '')
  const sockets = [1, 2, 3].map((k) => join(dir, `node${k}.sock`))
  const endpoints3 = o.endpointsFile3?.(dir)
  const agents: LabNode[] = []
  const start = async (k: number): Promise<LabNode> => {
    const node = await startLabNode({
      lab: lab.name,
      node: k,
      mode,
      policyFile: empty,
      pin: `/run/l7proxy/test-bpffs-${lab.name}n${k}`,
      admin: sockets[k - 1]!,
      threads: 1,
      logFile: join(dir, `node${k}.log`),
      kvstore: { leaseTtlSeconds: 3 },
      ...(k === 3 && endpoints3 ? { endpointsFile: endpoints3 } : {}),
    })
    agents[k - 1] = node
    return node
  }
  t.teardown(async () => {
    for (const a of agents) await a?.stop()
    for (let k = 1; k <= NODES; k++)
      rmSync(`/run/l7proxy/test-bpffs-${lab.name}n${k}`, { recursive: true, force: true })
  })
  for (let k = 1; k <= NODES; k++) await start(k)
  const status = async (k: number) => (await adminGet(sockets[k - 1]!, '/v1/status')) as { cluster: ClusterStatus }
  const http = (host: string, method: string, url: string): Promise<string> => lab.httpCode(host, url, { method })
  return { lab, dir, agents, sockets, start, status, http }
}

/** Runs the CLI against node k's agent. */
async function cli(
  c: Cluster,
  k: number,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return c.lab.exec('node', [process.execPath, distPath('proxy/cli/main.js'), ...args, '--socket', c.sockets[k - 1]!], {
    timeoutMs: 20_000,
  })
}

/** Imports the star-wars policy into the cluster through node 1, and waits until every node enforces it. */
async function importStarWars(t: Test, c: Cluster): Promise<number> {
  const r = await cli(c, 1, ['policy', 'import', '--cluster', join(projectRoot(), 'policy/examples/star-wars.yaml')])
  t.equal(r.code, 0, r.stderr)
  const revision = Number(/store revision (\d+)/.exec(r.stdout)?.[1])
  t.ok(revision > 0, `stored: ${r.stdout.trim()}`)
  t.ok(
    await waitUntil(
      async () =>
        (await c.status(1)).cluster.nodes.length === NODES &&
        (await c.status(1)).cluster.nodes.every((n) => n.policyRevision === revision),
      100,
      100,
    ),
    'every node reports the revision in force',
  )
  return revision
}

for (const mode of ['sk-assign', 'tproxy'] as const) {
  kernelTest(
    t,
    `cluster (${mode}): star-wars across three nodes, the policy imported once, L7 on both sides with the remote pod's identity`,
    async (t) => {
      const c = await cluster(t, mode)
      const revision = await importStarWars(t, c)
      t.equal(await c.http('tiefighter', 'POST', LANDING), '200', 'tiefighter (node 1) lands on the deathstar (node 2)')
      t.equal(
        await c.http('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'),
        '403',
        "a request the deathstar's ingress rules deny: 403 from node 2's proxy",
      )
      t.equal(
        await c.http('xwing', 'POST', LANDING),
        '000',
        'xwing (node 3, alliance) is dropped in the kernel at node 2',
      )
      const dig = async (name: string) => (await c.lab.exec('tiefighter', ['dig', '+time=2', '+tries=1', name])).stdout
      t.match(
        await dig('cantina.empire'),
        /status: NOERROR[\s\S]*192\.0\.2\.[34]/,
        "a name the tiefighter's egress rules allow, asked of kube-dns on node 2",
      )
      t.match(await dig('hoth.alliance'), /status: REFUSED/, 'one they do not: REFUSED by node 1')
      t.not(
        await c.http('tiefighter', 'GET', 'http://cantina.empire/'),
        '000',
        'toFQDNs: the learned address is allowed on node 1',
      )
      const grpc = async (method: string) =>
        JSON.parse(
          (
            await c.lab.exec(
              'tiefighter',
              [
                process.execPath,
                distPath('lab/clients/grpc-call.js'),
                '--target',
                '198.18.2.20:50051',
                '--method',
                method,
                '--deadline-ms',
                '4000',
              ],
              { timeoutMs: 20_000 },
            )
          ).stdout,
        ) as { ok: boolean; code?: number }
      t.match(await grpc('RequestLanding'), { ok: true }, 'gRPC: an allowed method on the gRPC deathstar (node 2)')
      t.match(await grpc('FireExhaustPort'), { code: PERMISSION_DENIED }, 'a denied one: PERMISSION_DENIED')

      const tiefighter =
        (await c.status(1)) &&
        ((await adminGet(c.sockets[0]!, '/v1/endpoints')) as Array<{ host: string; identity: number }>).find(
          (e) => e.host === 'tiefighter',
        )!.identity
      await new Promise((r) => setTimeout(r, 1_200)) // flow lines are flushed within a second
      const [node1, node2] = [c.agents[0]!.lines(), c.agents[1]!.lines()]
      t.match(
        node2.find((l) => l.method === 'PUT'),
        { verdict: 'denied', sourceIdentity: tiefighter, destination: '198.18.2.10:80' },
        "node 2's proxy decided the deathstar's ingress, knowing the tiefighter by its cluster identity",
      )
      t.notOk(
        node1.some((l) => l.method === 'PUT'),
        'node 1 had no HTTP rule to apply',
      )
      t.match(
        node1.find((l) => l.qname === 'hoth.alliance' || String(l.reason ?? '').includes('hoth.alliance')),
        { verdict: 'denied' },
        "node 1's proxy decided the tiefighter's DNS egress",
      )
      t.ok(
        node2.some((l) => l.grpcMethod === 'FireExhaustPort' && l.verdict === 'denied'),
        "node 2's proxy decided the gRPC call",
      )

      const ids = await cli(c, 2, ['identity', 'list'])
      t.match(
        ids.stdout,
        new RegExp(`${tiefighter}\\s+endpoint\\s+k8s:class=tiefighter.*node1`),
        'identity list: cluster identities with the node that uses each',
      )
      const remote = await cli(c, 2, ['endpoint', 'list', '--remote'])
      t.match(
        remote.stdout,
        /node1\s+-\s+tiefighter\s+\d+\s+198\.18\.1\.10/,
        "endpoint list --remote: the other nodes' pods",
      )
      t.match(remote.stdout, /node3\s+-\s+xwing\s+\d+\s+198\.18\.3\.20/)
      const policy = await cli(c, 3, ['policy', 'get'])
      t.match(
        policy.stdout,
        new RegExp(
          `cluster policy revision ${revision} here; by node: node1 ${revision}, node2 ${revision}, node3 ${revision}`,
        ),
        'policy get: the revision each node enforces',
      )
      const docs = documentedJson()
      for (const cmd of ['status', 'policy get']) {
        const actual = JSON.parse((await cli(c, 2, [...cmd.split(' '), '-o', 'json'])).stdout) as unknown
        t.same(
          undocumentedFields(docs.get(cmd)![1], actual),
          [],
          `${cmd} -o json in a cluster: as docs/cli-json.md documents it`,
        )
      }
      const st = await cli(c, 2, ['status'])
      t.match(st.stdout, /cluster state\s+current/)
      t.match(st.stdout, /node node2 \(this\)\s+198\.19\.0\.2, 3 endpoint\(s\)/)
    },
  )
}

kernelTest(
  t,
  'cluster faults: etcd stopped and back; an agent killed with -9, its lease expiring, and restarted',
  async (t) => {
    // Node 3 takes its endpoints from a file, so that its pod's labels can change while etcd is away.
    const xwing = labEndpointsOn(NODES, 3)[0]!
    const file = (dir: string): string => join(dir, 'endpoints3.yaml')
    const endpoints = (labels: Record<string, string>) =>
      `endpoints:\n- ${JSON.stringify({ id: xwing.id, name: 'xwing', interface: nodeIfname('xwing'), ips: xwing.ips, labels })}\n`
    const c = await cluster(t, 'sk-assign', {
      endpointsFile3: (dir) => (writeFileSync(file(dir), endpoints(xwing.labels)), file(dir)),
    })
    await importStarWars(t, c)
    t.equal(await c.http('tiefighter', 'POST', LANDING), '200')
    t.equal(await c.http('xwing', 'POST', LANDING), '000', 'the xwing (alliance) may not land')

    const etcd = labEtcd(c.lab.name)
    await etcd.stop()
    t.ok(
      await waitUntil(
        async () =>
          (await Promise.all([1, 2, 3].map((k) => c.status(k)))).every(
            (s) => s.cluster.degraded && !s.cluster.connected,
          ),
        100,
        100,
      ),
      'every agent reports itself degraded',
    )
    const metrics = await cli(c, 2, ['metrics'])
    t.match(metrics.stdout, /l7proxy_kvstore_connected 0/, 'and says so in its metrics')
    t.equal(await c.http('tiefighter', 'POST', LANDING), '200', 'etcd away: what was allowed stays allowed')
    t.equal(
      await c.http('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'),
      '403',
      'what was denied stays denied',
    )
    t.equal(await c.http('xwing', 'POST', LANDING), '000', 'nothing opens')
    // The xwing turns empire meanwhile: its new labels need an identity etcd must number.
    writeFileSync(file(c.dir), endpoints({ ...xwing.labels, org: 'empire' }))
    t.ok(
      await waitUntil(
        async () =>
          ((await adminGet(c.sockets[2]!, '/v1/endpoints')) as Array<{ identity: number }>)[0]?.identity === 5,
        50,
        100,
      ),
      'its endpoint holds reserved:init (5) until etcd numbers the new labels',
    )
    t.equal(await c.http('xwing', 'POST', LANDING), '000', 'and is allowed nothing that needs its identity')
    t.ok(
      c.agents[2]!.lines().some((l) => String(l.msg).includes('endpoint waits for its identity')),
      'which is logged',
    )

    await etcd.start()
    t.ok(
      await waitUntil(
        async () => (await Promise.all([1, 2, 3].map((k) => c.status(k)))).every((s) => !s.cluster.degraded),
        150,
        100,
      ),
      'etcd back: no agent is degraded',
    )
    t.ok(
      await waitUntil(async () => (await c.http('xwing', 'POST', LANDING)) === '200', 30, 200),
      'the xwing, now empire, has its identity on node 2 too: it lands',
    )
    t.equal(await c.http('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'), '403')

    // kill -9 node 3's agent: node 2 drops its pod's address (to world) once the lease (3 s) expires.
    const remoteOn2 = async (): Promise<string[]> =>
      ((await adminGet(c.sockets[1]!, '/v1/endpoints?remote=1')) as Array<{ node?: string; ips: string[] }>)
        .filter((e) => e.node === 'node3')
        .flatMap((e) => e.ips)
    t.same(await remoteOn2(), ['198.18.3.20'])
    process.kill(c.agents[2]!.pid, 'SIGKILL')
    await c.agents[2]!.stop()
    t.ok(
      await waitUntil(async () => (await remoteOn2()).length === 0, 100, 100),
      "node 2 dropped the dead node's pod after its lease expired",
    )
    t.notOk(
      (await c.status(2)).cluster.nodes.some((n) => n.name === 'node3'),
      'and the dead node',
    )
    await c.start(3)
    t.ok(
      await waitUntil(async () => (await remoteOn2()).length === 1, 100, 100),
      'restarted, node 3 takes its keys back',
    )
    t.ok(
      await waitUntil(async () => (await c.http('xwing', 'POST', LANDING)) === '200', 30, 200),
      'and its pod is allowed again',
    )
  },
)
