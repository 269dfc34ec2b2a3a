// `l7proxy lab down` after a kill -9 of whatever brought the lab up leaves nothing behind, and
// `l7proxy lab up` twice is harmless.

import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { labDown, labStateDir, labStatus } from '../lab/lab.js'
import { execCommand, isAlive, listNetns, netnsPids } from '../lab/netns.js'
import { hostNetns } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { runCli } from './fixtures/cli.js'
import { kernelTest } from './fixtures/kernel.js'

async function labNamespaces(name: string): Promise<string[]> {
  return (await listNetns()).filter((ns) => ns.startsWith(`l7lab-${name}-`))
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await cond()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out waiting for ${what}`)
}

for (const when of ['during up', 'after up'] as const) {
  kernelTest(t, `lab down after kill -9 ${when} leaves nothing behind`, async (t) => {
    const name = `k${process.pid}${when === 'during up' ? 'a' : 'b'}`
    t.teardown(() => labDown(name).then(() => undefined))
    const labModule = pathToFileURL(distPath('lab/lab.js')).href
    const code = `import(${JSON.stringify(labModule)}).then((m) => m.labUp(${JSON.stringify(name)})).then(() => { console.log('UP'); setInterval(() => {}, 1000) })`
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = new Promise((r) => child.once('exit', r))
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    if (when === 'during up') {
      // A server is listening but the lab is not finished (later servers, the state file).
      const deathstar = hostNetns(name, 'deathstar')
      await until('the deathstar server to listen', async () => {
        const r = await execCommand(['ss', '-N', deathstar, '-Hlnt'])
        return r.code === 0 && /:80\s/.test(r.stdout)
      })
    } else {
      await until('lab up to finish', async () => out.includes('UP'))
    }
    child.kill('SIGKILL')
    await exited

    const leftovers = await labNamespaces(name)
    t.ok(leftovers.length > 0, `the crash left ${leftovers.length} namespaces`)
    const pids = (await Promise.all(leftovers.map(netnsPids))).flat()
    t.ok(pids.length > 0, `and ${pids.length} server processes`)
    if (when === 'during up')
      t.notOk((await labStatus()).find((s) => s.name === name)?.healthy, 'status calls it broken')

    const down = runCli(['lab', 'down', '--name', name])
    t.equal(down.code, 0, down.stderr)
    t.match(down.stdout, new RegExp(`removed ${leftovers.length} namespaces`))
    t.same(await labNamespaces(name), [], 'no namespace left')
    t.same(pids.filter(isAlive), [], 'no process left')
    t.notOk(existsSync(labStateDir(name)), 'no state directory left')
    t.same(
      leftovers.filter((ns) => existsSync(`/etc/netns/${ns}`)),
      [],
      'no /etc/netns entry left',
    )
  })
}

kernelTest(t, 'l7proxy lab up twice is harmless; status reports it; down removes it', async (t) => {
  const name = `c${process.pid}`
  t.teardown(() => labDown(name).then(() => undefined))
  const first = runCli(['lab', 'up', '--name', name])
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, new RegExp(`lab '${name}' is up`))
  const second = runCli(['lab', 'up', '--name', name])
  t.equal(second.code, 0, second.stderr)
  t.match(second.stdout, /was already up; left as it is/)
  const status = runCli(['lab', 'status', '-o', 'json'])
  t.equal(status.code, 0)
  const mine = (JSON.parse(status.stdout) as Array<{ name: string; healthy: boolean; namespaces: unknown[] }>).find(
    (l) => l.name === name,
  )
  t.equal(mine?.healthy, true, 'status says healthy')
  t.equal(mine?.namespaces.length, 7, 'node + 6 hosts')
  t.match(runCli(['lab', 'status']).stdout, new RegExp(`${name}\\s+up\\s+l7lab-${name}-node`))
  const down = runCli(['lab', 'down', '--name', name])
  t.equal(down.code, 0)
  t.same(await labNamespaces(name), [])
  t.match(runCli(['lab', 'down', '--name', name]).stdout, /nothing to remove/, 'down again is harmless')
})

kernelTest(t, 'a test process stopped by SIGTERM (a tap timeout) cleans up its lab and bpffs', async (t) => {
  const fixture = pathToFileURL(distPath('test/fixtures/lab.js')).href
  // The fixture with a minimal stand-in for tap's Test: teardowns that never get to run.
  const code = `import(${JSON.stringify(fixture)}).then(async (m) => {
    const t = { teardown() {} }
    const lab = await m.useLab(t)
    const dir = m.useBpffs(t, lab.name)
    console.log(JSON.stringify({ name: lab.name, dir }))
    setInterval(() => {}, 1000)
  })`
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  await until('the child to bring its lab up', async () => out.includes('\n'))
  const { name, dir } = JSON.parse(out) as { name: string; dir: string }
  t.teardown(() => labDown(name).then(() => undefined))
  t.ok((await labNamespaces(name)).length > 0, 'the child has a lab')
  t.ok(existsSync(dir), 'and a bpffs')
  child.kill('SIGTERM')
  t.equal(await exited, 143, 'it exits as killed by SIGTERM')
  t.same(await labNamespaces(name), [], 'its lab is gone')
  t.notOk(readFileSync('/proc/mounts', 'utf8').includes(` ${dir} `), 'its bpffs is unmounted')
  t.notOk(existsSync(dir), 'and removed')
})
