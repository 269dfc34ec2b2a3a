// The set of what is open now (connections, mostly), for the sweeps that check their deadlines
// and for close(). Not a Map or Set: under connection churn V8's hash tables rehash every few
// dozen adds and leave the old table, already in old space, pointing at the members of that
// moment; scavenges take those stale slots as roots, so a closed connection's whole object graph
// survived a scavenge or two and was promoted, for mark-sweep to free. Measured on loopback with
// `Connection: close` load: scavenges of 5-7 ms with ~2 MB promoted each, against ~1 ms and a
// few KB with this dense array, where a removed member's slot is overwritten at once.
// Members carry their own index (`openSlot`), so adding and removing are O(1) and allocate
// nothing; a member is in one OpenSet at a time.

export interface OpenMember {
  /** Where the member is in its OpenSet's array; -1 when it is in none. */
  openSlot: number
}

export class OpenSet<T extends OpenMember> {
  private readonly members: T[] = []

  get size(): number {
    return this.members.length
  }

  add(m: T): void {
    if (m.openSlot !== -1) return
    m.openSlot = this.members.length
    this.members.push(m)
  }

  /** Removes `m` (if it is here): the last member takes its slot. */
  delete(m: T): void {
    const i = m.openSlot
    if (i === -1 || this.members[i] !== m) return
    const last = this.members.pop()!
    if (last !== m) {
      this.members[i] = last
      last.openSlot = i
    }
    m.openSlot = -1
  }

  /**
   * Calls `fn` on every member, last first, so that `fn` may remove the member it was given (or
   * others: a member may then be visited twice, never skipped unless removed). A member added
   * meanwhile may be visited or not.
   */
  forEach(fn: (m: T) => void): void {
    for (let i = this.members.length - 1; i >= 0; i = Math.min(i, this.members.length) - 1) fn(this.members[i]!)
  }
}
