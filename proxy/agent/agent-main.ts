// The agent's process: `node dist/proxy/agent/agent-main.js`, its settings (AgentSettings, made
// and checked by whoever starts it: the agent command, a lab) one JSON document on stdin. It
// prints READY once the agent is up, logs flows as JSON lines on stdout (or to the settings' log
// file), and stops the agent on SIGTERM or SIGINT, also one that comes while it is starting, and
// exits once another agent took over from it and it drained (proxy/agent/handover.ts). A
// start-up step that fails exits 1 with one line saying which and why; settings that are not
// JSON exit 2.

import { readFileSync } from 'node:fs'
import { Agent, type AgentSettings, AgentStartError } from './agent.js'

// A stop asked for while still starting is kept and honoured once everything that has to be
// taken down again is up (the default action would leave the datapath attached and pinned).
let stopRequested = false
const stopWhileStarting = (): void => void (stopRequested = true)
process.once('SIGTERM', stopWhileStarting)
process.once('SIGINT', stopWhileStarting)

let settings: AgentSettings
try {
  settings = JSON.parse(readFileSync(0, 'utf8')) as AgentSettings
} catch (e) {
  process.stderr.write(`agent: settings on stdin: ${(e as Error).message}\n`)
  process.exit(2)
}

let agent: Agent
try {
  agent = await Agent.start(settings)
} catch (e) {
  if (!(e instanceof AgentStartError)) throw e
  // One line that says what failed; what the agent had made is down again.
  process.stderr.write(`agent: ${e.message}\n`)
  process.exit(1)
}
process.once('exit', () => agent.flushLogs())
process.stdout.write('READY\n')
const shutdown = (): void => void agent.stop().finally(() => process.exit(0))
process.off('SIGTERM', stopWhileStarting)
process.off('SIGINT', stopWhileStarting)
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
if (stopRequested) shutdown()
// Another agent took over and this one drained: it has stopped, leaving the datapath to that one.
void agent.whenHandedOver.then(() => process.exit(0))
