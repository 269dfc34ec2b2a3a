// What the DNS proxy learns from allowed answers for toFQDNs: names through CNAME chains, the
// minimum TTL, the cap on IPs per name, expiry.

import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { FqdnCache } from '../proxy/dns/fqdn-cache.js'
import { FqdnStore } from '../proxy/dns/fqdn-store.js'

const A = (name: string, ip: string, ttl = 60) => ({ type: 'A', name, data: ip, ttl })

t.test('A records of the question and its CNAME chain belong to every name on the chain', async (t) => {
  const c = new FqdnCache({ minTtlSeconds: 0 })
  const changed = c.learn(
    'www.cantina.empire',
    [
      { type: 'CNAME', name: 'www.cantina.empire', data: 'cantina.empire', ttl: 60 },
      A('cantina.empire', '192.0.2.3'),
      A('elsewhere.empire', '203.0.113.7'),
    ],
    0,
  )
  t.same(changed.sort(), ['cantina.empire', 'www.cantina.empire'])
  t.same(c.ips('www.cantina.empire'), ['192.0.2.3'])
  t.same(c.ips('Cantina.Empire.'), ['192.0.2.3'], 'names match case- and trailing-dot-insensitively')
  t.same(c.ips('elsewhere.empire'), [], 'a record off the chain teaches nothing')
  t.same(
    c.learn(
      'loop.empire',
      [{ type: 'CNAME', name: 'loop.empire', data: 'loop.empire' }, A('loop.empire', '192.0.2.9')],
      0,
    ),
    ['loop.empire'],
    'a CNAME loop ends the chain',
  )
  t.same(c.learn('nothing.empire', [], 0), [], 'no records: nothing changes')
})

t.test('TTLs: raised to the minimum, renewed by later answers, and expiry takes IPs out', async (t) => {
  const c = new FqdnCache({ minTtlSeconds: 10 })
  t.same(c.learn('speeder.empire', [A('speeder.empire', '192.0.2.5', 3)], 0), ['speeder.empire'])
  t.same(c.expire(9_999), [], 'kept for the minimum TTL, not the 3 s the server said')
  t.same(c.learn('speeder.empire', [A('speeder.empire', '192.0.2.5', 3)], 5_000), [], 'a renewal is no change')
  t.same(c.expire(12_000), [], 'but it moves the expiry')
  t.same(c.expire(15_000), ['speeder.empire'])
  t.same(c.ips('speeder.empire'), [])
  t.same(c.entries(), [], 'and the name is gone')
})

t.test('zombies: an expired IP a connection still uses stays until the connection is gone', async (t) => {
  const c = new FqdnCache({ minTtlSeconds: 0 })
  c.learn('cantina.empire', [A('cantina.empire', '192.0.2.3', 5), A('cantina.empire', '192.0.2.4', 5)], 0)
  const open = new Set(['192.0.2.3'])
  const asked: string[] = []
  const inUse = (ip: string): boolean => (asked.push(ip), open.has(ip))
  t.same(c.expire(4_000, inUse), [], 'nothing expired yet')
  t.same(asked, [], 'and no connection asked about')
  t.same(c.expire(5_000, inUse), ['cantina.empire'], 'the unused IP goes at expiry')
  t.same(c.ips('cantina.empire'), ['192.0.2.3'], 'the one a connection uses stays')
  t.same(
    c.entries(6_000),
    [{ name: 'cantina.empire', ips: [{ ip: '192.0.2.3', expiresAt: 5_000, zombie: true }] }],
    'listed as a zombie',
  )
  t.same(c.expire(6_000, inUse), [], 'still in use: still there')
  open.clear()
  t.same(c.expire(7_000, inUse), ['cantina.empire'], 'its connection closed: it goes')
  t.same(c.entries(7_000), [])
  c.learn('cantina.empire', [A('cantina.empire', '192.0.2.3', 5)], 8_000)
  t.same(
    c.entries(9_000),
    [{ name: 'cantina.empire', ips: [{ ip: '192.0.2.3', expiresAt: 13_000 }] }],
    'a new answer makes it live again',
  )
})

t.test(
  'zombies: a grace period after the last connection, and at most maxZombies, those used longest ago going first',
  async (t) => {
    const c = new FqdnCache({ minTtlSeconds: 0, idleGraceSeconds: 10, maxZombies: 2 })
    c.learn(
      'a.empire',
      [A('a.empire', '192.0.2.1', 1), A('a.empire', '192.0.2.2', 1), A('a.empire', '192.0.2.3', 1)],
      0,
    )
    const open = new Set(['192.0.2.1', '192.0.2.2'])
    const inUse = (ip: string): boolean => open.has(ip)
    t.same(c.expire(2_000, inUse), ['a.empire'], 'never used: no grace, it goes at expiry')
    t.same(c.ips('a.empire').sort(), ['192.0.2.1', '192.0.2.2'])
    open.delete('192.0.2.1')
    t.same(c.expire(11_000, inUse), [], 'its connection gone 9 s ago: still within the 10 s of grace')
    t.same(c.expire(12_000, inUse), ['a.empire'], 'grace over: it goes')
    t.same(c.ips('a.empire'), ['192.0.2.2'], 'the one still in use stays')
    c.learn('b.empire', [A('b.empire', '192.0.2.4', 1), A('b.empire', '192.0.2.5', 1)], 12_000)
    open.add('192.0.2.4').add('192.0.2.5')
    open.delete('192.0.2.2')
    t.same(
      c.expire(14_000, inUse).sort(),
      ['a.empire'],
      'three zombies, two kept: the one seen in use longest ago goes, though within its grace',
    )
    t.same(c.ips('b.empire').sort(), ['192.0.2.4', '192.0.2.5'])
  },
)

t.test('at most maxIpsPerName IPs a name: the ones learned last', async (t) => {
  const c = new FqdnCache({ maxIpsPerName: 2, minTtlSeconds: 0 })
  c.learn('many.empire', [A('many.empire', '192.0.2.1'), A('many.empire', '192.0.2.2')], 0)
  t.same(c.learn('many.empire', [A('many.empire', '192.0.2.3')], 1), ['many.empire'])
  t.same(c.ips('many.empire'), ['192.0.2.2', '192.0.2.3'])
  t.match(c.entries(), [
    {
      name: 'many.empire',
      ips: [
        { ip: '192.0.2.2', expiresAt: 60_000 },
        { ip: '192.0.2.3', expiresAt: 60_001 },
      ],
    },
  ])
  t.same(c.clear(), ['many.empire'], 'clear: the names it forgot')
  t.same(c.entries(), [])
})

t.test('saved and restored: what expired and what is malformed stay out; a corrupt file is set aside', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-fqdn-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const store = new FqdnStore(dir)
  t.same(store.load(), { entries: [], problem: null }, 'nothing saved yet')
  const c = new FqdnCache({ minTtlSeconds: 0 })
  c.learn('cantina.empire', [A('cantina.empire', '192.0.2.3', 60), A('cantina.empire', '192.0.2.4', 1)], 1_000)
  store.save(c.entries())
  t.equal(statSync(store.file).mode & 0o777, 0o600)
  const back = new FqdnCache()
  t.same(back.restore(store.load().entries, 5_000), ['cantina.empire'])
  t.same(back.ips('cantina.empire'), ['192.0.2.3'], 'the address whose TTL ran out is not restored')
  t.same(
    new FqdnCache().restore(
      [{ name: 'x.empire', ips: [{ ip: 'not-an-ip', expiresAt: 9e15 }] }, 'junk', { name: 3 }],
      0,
    ),
    [],
    'malformed entries are skipped',
  )
  writeFileSync(store.file, '{ half')
  const broken = store.load()
  t.same(broken.entries, [])
  t.match(broken.problem, /set aside as .*fqdn-cache\.json\.bad/)
  t.ok(existsSync(`${store.file}.bad`) && !existsSync(store.file))
})

t.test(
  "merged: another agent's entries join what is known, each address until the later expiry; expired and malformed ones stay out",
  async (t) => {
    const c = new FqdnCache({ minTtlSeconds: 0, maxIpsPerName: 3 })
    c.learn('cantina.empire', [A('cantina.empire', '192.0.2.3', 10)], 0)
    const grew = c.merge(
      [
        {
          name: 'Cantina.Empire.',
          ips: [
            { ip: '192.0.2.3', expiresAt: 60_000 },
            { ip: '192.0.2.4', expiresAt: 30_000 },
          ],
        },
        {
          name: 'speeder.empire',
          ips: [
            { ip: '192.0.2.5', expiresAt: 500 },
            { ip: 'not-an-ip', expiresAt: 60_000 },
          ],
        },
      ],
      1_000,
    )
    t.same(grew, ['cantina.empire'], 'only names whose addresses grew (speeder: expired or malformed)')
    t.same(c.entries(1_000).find((e) => e.name === 'cantina.empire')?.ips, [
      { ip: '192.0.2.3', expiresAt: 60_000 },
      { ip: '192.0.2.4', expiresAt: 30_000 },
    ])
    t.same(c.ips('speeder.empire'), [])
    t.same(
      c.merge([{ name: 'cantina.empire', ips: [{ ip: '192.0.2.3', expiresAt: 5_000 }] }], 1_000),
      [],
      'an address known already: no growth, the later expiry kept',
    )
    t.same(c.entries(1_000)[0]!.ips[0], { ip: '192.0.2.3', expiresAt: 60_000 })
  },
)
