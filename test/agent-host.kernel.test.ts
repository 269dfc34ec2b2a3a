// `l7proxy agent` with no lab, as on a real host: started in the network namespace it is to serve
// (here a lab's node namespace plays the host, and nothing of the lab is given to the agent but
// what a host's owner would write: an endpoints file, the interfaces to attach, a policy
// directory, where to keep its admin socket). It enforces on those interfaces, answers queries
// on that socket, and takes down what it put up when stopped.

import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { LAB_HOSTS, labEndpoints, nodeIfname } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { startAgentCommand, statusUntil } from './fixtures/agent-command.js'
import { runCli } from './fixtures/cli.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'
import { waitUntil } from './fixtures/wait.js'

kernelTest(
  t,
  'agent on a host: told its endpoints and interfaces, it enforces there; the CLI finds it by --socket',
  async (t) => {
    const lab = await useLab(t)
    const dir = mkdtempSync(join(tmpdir(), 'l7-host-agent-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    copyFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml'), join(dir, 'star-wars.yaml'))
    const endpoints = labEndpoints().map(
      (e) =>
        `- { id: ${e.id}, name: ${e.host}, interface: ${nodeIfname(e.host)}, ips: [${e.ips.join(', ')}], labels: ${JSON.stringify(e.labels)} }`,
    )
    writeFileSync(join(dir, 'endpoints.yaml'), `endpoints:\n${endpoints.join('\n')}\n`)
    const socket = join(dir, 'agent.sock')
    const pin = `/run/l7proxy/test-bpffs-host${process.pid}`
    const interfaces = LAB_HOSTS.map((h) => nodeIfname(h.name))
    writeFileSync(
      join(dir, 'agent.yaml'),
      `policyDirectory: ${dir}\nendpointsFile: ${join(dir, 'endpoints.yaml')}\ninterfaces: [${interfaces.join(', ')}]\nbpffs: ${pin}\nstateDirectory: ${dir}/state\nproxy: { threads: 1 }\nadmin: { socket: ${socket}, metrics: 127.0.0.1:0 }\n`,
    )
    const running = startAgentCommand(t, ['--config', join(dir, 'agent.yaml')], { pin, netns: lab.netns('node') })
    const { child: agent, out, exited } = running
    let status = await statusUntil(running, socket)
    t.equal(status.code, 0, `the agent answers on its socket (${out().trim().split('\n').at(-1) ?? ''})`)
    t.match(JSON.parse(status.stdout), {
      mode: 'sk-assign',
      endpoints: labEndpoints().length,
      policy: { directory: dir },
    })
    // What it printed is read between polls (runCli blocks this process meanwhile).
    await waitUntil(() => out().includes('starting the agent'), 50, 20)
    t.match(out(), /starting the agent on this host \(sk-assign/, 'it says it runs on this host')
    const curl = (method: string): Promise<string> =>
      lab.httpCode('tiefighter', `http://198.18.2.10/v1/${method === 'POST' ? 'request-landing' : 'exhaust-port'}`, {
        method,
        maxTime: 3,
      })
    t.equal(await curl('POST'), '200', 'an allowed request lands')
    t.equal(await curl('PUT'), '403', 'a denied one gets 403 from the proxy')
    const xwing = await lab.exec('xwing', [
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '--max-time',
      '2',
      '-X',
      'POST',
      'http://198.18.2.10/v1/request-landing',
    ])
    t.not(xwing.code, 0, 'an unselected endpoint is dropped in the kernel')
    const list = runCli(['endpoint', 'list', '--socket', socket, '-o', 'json'])
    t.equal((JSON.parse(list.stdout) as unknown[]).length, labEndpoints().length, 'endpoint list on the same socket')

    // SIGHUP with a changed configuration: a new agent in this process takes over from the old
    // one (its sockets, metrics listener and datapath), and the old one drains and stops.
    writeFileSync(
      join(dir, 'agent.yaml'),
      readFileSync(join(dir, 'agent.yaml'), 'utf8').replace('threads: 1', 'threads: 2'),
    )
    agent.kill('SIGHUP')
    await waitUntil(() => out().split('starting the agent on this host').length >= 3, 200, 50)
    t.match(out(), /SIGHUP: proxy changed; a new agent takes over/, 'SIGHUP: the changed setting named, and a takeover')
    status = await statusUntil(
      running,
      socket,
      (r) => r.code === 0 && (JSON.parse(r.stdout) as { http: { threads: number } }).http.threads === 2,
    )
    t.match(JSON.parse(status.stdout), { http: { threads: 2 } }, 'the new agent runs with it')
    t.equal(await curl('PUT'), '403', 'and enforces as before')
    agent.kill('SIGTERM')
    t.equal(await exited, 0, 'SIGTERM stops it cleanly')
    const filters = await lab.exec('node', ['tc', 'filter', 'show', 'dev', nodeIfname('tiefighter'), 'ingress'])
    t.equal(filters.stdout.trim(), '', 'and its programs are gone from the interfaces')
    t.equal(await curl('PUT'), '503', 'nothing enforces any more: the PUT reaches the deathstar (which panics)')
  },
)
