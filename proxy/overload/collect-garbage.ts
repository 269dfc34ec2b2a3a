// A full garbage collection of this thread's heap, asked for after a flood has ended: V8 would
// collect the flood's dead connections at its next major GC, which an idle proxy may not run for
// minutes, so the memory they held stays counted against the node (and glibc cannot give back
// what their buffers used); that GC also starts V8's memory reducer, which shrinks the heap later. `gc` is exposed the way Jest's leak detection does it: V8's
// --expose-gc flag set at run time, and the function taken from a new context (contexts made
// after the flag have it). Where that is not possible, nothing is collected early.

import v8 from 'node:v8'
import vm from 'node:vm'

let gc: (() => void) | null | undefined

/** Collects now; false when this Node does not let it (then V8's own schedule holds). */
export function collectGarbage(): boolean {
  if (gc === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc')
      gc = vm.runInNewContext('gc') as () => void
    } catch {
      gc = null
    }
  }
  gc?.()
  return gc !== null
}
