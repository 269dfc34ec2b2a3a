// What is open now, kept in a dense array whose members know their slot: adding and removing in
// any order keeps exactly the members added and not removed; a visit may remove members (the one
// visited or others) and still reaches every member that stays.

import t from 'tap'
import { type OpenMember, OpenSet } from '../proxy/open-set.js'

class Member implements OpenMember {
  openSlot = -1
  constructor(readonly id: number) {}
}

const ids = (s: OpenSet<Member>): number[] => {
  const seen: number[] = []
  s.forEach((m) => seen.push(m.id))
  return seen.sort((a, b) => a - b)
}

t.test('adds and removes members; twice, or one that is not there, changes nothing', async (t) => {
  const s = new OpenSet<Member>()
  const [a, b, c] = [new Member(1), new Member(2), new Member(3)]
  s.add(a)
  s.add(b)
  s.add(b)
  s.add(c)
  t.equal(s.size, 3)
  s.delete(a)
  t.equal(a.openSlot, -1, 'a removed member is in no set')
  t.same(ids(s), [2, 3], 'the last member took the removed one’s slot')
  s.delete(a)
  t.equal(s.size, 2, 'removing again changes nothing')
  const other = new OpenSet<Member>()
  other.add(new Member(9))
  other.delete(b)
  t.equal(other.size, 1, 'a member of another set is not removed from this one')
  t.same(ids(s), [2, 3])
  s.add(a)
  t.same(ids(s), [1, 2, 3], 'and may come back')
})

t.test('agrees with a Set over a long random run of adds and removes', async (t) => {
  const s = new OpenSet<Member>()
  const reference = new Set<Member>()
  const pool = Array.from({ length: 64 }, (_, i) => new Member(i))
  let seed = 7
  const next = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n
  for (let i = 0; i < 5000; i++) {
    const m = pool[next(pool.length)]!
    if (next(2) === 0) {
      s.add(m)
      reference.add(m)
    } else {
      s.delete(m)
      reference.delete(m)
    }
  }
  t.equal(s.size, reference.size)
  t.same(
    ids(s),
    [...reference].map((m) => m.id).sort((a, b) => a - b),
  )
  for (const m of pool) t.equal(m.openSlot !== -1, reference.has(m), `member ${m.id} knows whether it is in`)
})

t.test('a visit that removes the member it was given visits every member once', async (t) => {
  const s = new OpenSet<Member>()
  for (let i = 0; i < 10; i++) s.add(new Member(i))
  const seen: number[] = []
  s.forEach((m) => {
    seen.push(m.id)
    s.delete(m)
  })
  t.same(
    seen.sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  )
  t.equal(s.size, 0)
})

t.test('a visit that removes other members skips none of those that stay', async (t) => {
  for (let victimsPerVisit = 1; victimsPerVisit <= 3; victimsPerVisit++) {
    const s = new OpenSet<Member>()
    const all = Array.from({ length: 12 }, (_, i) => new Member(i))
    for (const m of all) s.add(m)
    const seen = new Set<number>()
    const removed = new Set<number>()
    let added = 0
    s.forEach((m) => {
      t.notOk(removed.has(m.id), `a removed member (${m.id}) is not visited`)
      seen.add(m.id)
      // Remove the lowest ids still in: they sit early in the array, not yet visited.
      for (const victim of all.filter((v) => v.openSlot !== -1 && v !== m).slice(0, victimsPerVisit)) {
        s.delete(victim)
        removed.add(victim.id)
      }
      if (added++ < 2) s.add(new Member(100 + added))
    })
    for (const m of all)
      if (!removed.has(m.id))
        t.ok(seen.has(m.id), `member ${m.id} stayed and was visited (${victimsPerVisit} removed per visit)`)
    t.equal(s.size, all.length - removed.size + 2, 'those added during the visit are in')
  }
})
