// The set of what is open now (connections, mostly), for the sweeps that check their deadlines
// and for close(). Not a Map or Set: under connection churn V8's hash tables rehash every few
// dozen adds and leave the old table, already in old space, pointing at the members of that
// moment; scavenges take those stale slots as roots, so a closed connection's whole object graph
// survived a scavenge or two and was promoted, for mark-sweep to free. Measured on loopback with
// `Connection: close` load: scavenges of 5-6 ms with 1.7 MB promoted each, against 1.7-2 ms and
// 0.3 MB with this dense array, where a removed member's slot is emptied at once.
// Members carry their own index (`openSlot`), so adding and removing are O(1) and allocate
// nothing; a member is in one OpenSet at a time.

export interface OpenMember {
  /** Where the member is in its OpenSet's array; -1 when it is in none. */
  openSlot: number
}

export class OpenSet<T extends OpenMember> {
  /**
   * Members in [0, count); the slots above are empty. The array only grows: shrinking and growing
   * again would copy it and leave the old copy, with its references, behind.
   */
  private readonly members: Array<T | undefined> = []
  private count = 0

  get size(): number {
    return this.count
  }

  add(m: T): void {
    if (m.openSlot !== -1) return
    m.openSlot = this.count
    if (this.count === this.members.length) this.members.push(m)
    else this.members[this.count] = m
    this.count++
  }

  /** Removes `m` (if it is here): the last member takes its slot. */
  delete(m: T): void {
    const i = m.openSlot
    if (i === -1 || this.members[i] !== m) return
    const last = this.members[--this.count]!
    this.members[i] = last
    last.openSlot = i
    this.members[this.count] = undefined
    m.openSlot = -1
  }

  /**
   * Calls `fn` on every member, last first, so that `fn` may remove the member it was given (or
   * others: a member may then be visited twice, never skipped unless removed). A member added
   * meanwhile may be visited or not.
   */
  forEach(fn: (m: T) => void): void {
    for (let i = this.count - 1; i >= 0; i = Math.min(i, this.count) - 1) fn(this.members[i]!)
  }
}
