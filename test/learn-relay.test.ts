// A DNS proxy thread's answers learned by the thread that owns the FQDN cache: batched per turn
// of the event loop, released at once when the maps already allow what they name, held until
// the owner has learned them otherwise, and released after the max delay if it never says so.

import t from 'tap'
import type { AnswerRecord } from '../proxy/dns/fqdn-cache.js'
import { LearnRelay, type LearnRequest } from '../proxy/dns/learn-relay.js'

const A = (name: string, ip: string): AnswerRecord => ({ name, type: 'A', ttl: 30, data: ip })
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

function relay(maxDelayMs = 1000) {
  const sent: Array<{ id: number; answers: LearnRequest[] }> = []
  const late: Array<[number, number]> = []
  const r = new LearnRelay({
    maxDelayMs,
    send: (id, answers) => sent.push({ id, answers }),
    onLate: (id, held) => late.push([id, held]),
  })
  return { r, sent, late }
}

/** Whether `p` has settled by the next turn of the event loop. */
async function settled(p: Promise<void> | void): Promise<boolean> {
  let done = false
  void Promise.resolve(p).then(() => (done = true))
  await tick()
  return done
}

t.test('a new address is held until the owner has learned its batch', async (t) => {
  const { r, sent } = relay()
  const records = [A('cantina.empire', '192.0.2.3')]
  const held = r.learn('cantina.empire', records)
  records.length = 0 // the proxy reuses its array: the relay kept a copy
  t.ok(held instanceof Promise)
  t.equal(await settled(held), false, 'not released before the owner answers')
  t.same(sent, [{ id: 0, answers: [{ qname: 'cantina.empire', records: [A('cantina.empire', '192.0.2.3')] }] }])
  r.learned(0)
  t.equal(await settled(held), true, 'released once learned')
})

t.test('addresses the maps already allow go at once, and are still sent to be renewed', async (t) => {
  const { r, sent } = relay()
  r.setKnown('cantina.empire', ['192.0.2.3', '192.0.2.4'])
  t.equal(r.learn('cantina.empire', [A('cantina.empire', '192.0.2.4')]), undefined)
  t.ok(r.learn('cantina.empire', [A('cantina.empire', '192.0.2.9')]) instanceof Promise, 'one address more: held')
  r.setKnown('cantina.empire', [])
  t.ok(r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3')]) instanceof Promise, 'forgotten: held again')
  await tick()
  t.equal(sent.length, 1, 'answers of one turn go as one batch')
  t.equal(sent[0]!.answers.length, 3)
  r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3')])
  await tick()
  t.equal(sent.length, 2, 'the next turn makes the next batch')
})

t.test('renewals go once per batch for each name and set of records, with the longest TTL', async (t) => {
  const { r, sent } = relay()
  r.setKnown('cantina.empire', ['192.0.2.3', '192.0.2.4'])
  r.setKnown('hangar.empire', ['192.0.2.7'])
  for (let i = 0; i < 100; i++)
    t.equal(r.learn('cantina.empire', [{ ...A('cantina.empire', '192.0.2.3'), ttl: 30 + (i % 7) }]), undefined)
  r.learn('cantina.empire', [A('cantina.empire', '192.0.2.4')])
  r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3'), A('cantina.empire', '192.0.2.4')])
  r.learn('hangar.empire', [A('hangar.empire', '192.0.2.7')])
  const held = r.learn('cantina.empire', [A('cantina.empire', '192.0.2.9')])
  await tick()
  t.same(
    sent[0]!.answers.map((a) => [a.qname, a.records.map((x) => `${x.data as string}/${x.ttl ?? 0}`).join(' ')]),
    [
      ['cantina.empire', '192.0.2.3/36'],
      ['cantina.empire', '192.0.2.4/30'],
      ['cantina.empire', '192.0.2.3/30 192.0.2.4/30'],
      ['hangar.empire', '192.0.2.7/30'],
      ['cantina.empire', '192.0.2.9/30'],
    ],
    'one renewal per distinct answer (its longest TTL), and the new address as it came',
  )
  t.ok(held instanceof Promise)
  r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3')])
  await tick()
  t.equal(sent[1]!.answers.length, 1, 'the next batch renews again')
})

t.test('a CNAME target the maps do not know yet holds the answer', async (t) => {
  const { r } = relay()
  r.setKnown('www.empire', ['192.0.2.5'])
  const cname: AnswerRecord = { name: 'www.empire', type: 'CNAME', ttl: 30, data: 'Speeder.Empire' }
  t.ok(r.learn('www.empire', [cname, A('speeder.empire', '192.0.2.5')]) instanceof Promise)
  r.setKnown('speeder.empire', ['192.0.2.5'])
  t.equal(r.learn('www.empire', [cname, A('speeder.empire', '192.0.2.5')]), undefined)
})

t.test('an owner that does not answer in time: released after the max delay, and told', async (t) => {
  const { r, late } = relay(50)
  const started = performance.now()
  const held = r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3')])
  await held
  t.ok(performance.now() - started >= 45, 'not before the max delay')
  t.same(late, [[0, 1]])
  r.learned(0) // the owner's late word changes nothing
  t.same(late, [[0, 1]])
})

t.test('closing releases what is held', async (t) => {
  const { r, late } = relay()
  const held = r.learn('cantina.empire', [A('cantina.empire', '192.0.2.3')])
  await tick()
  r.close()
  t.equal(await settled(held), true)
  t.same(late, [])
})
