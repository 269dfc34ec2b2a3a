import t from 'tap'
import { runCli } from './fixtures/cli.js'

const badArgs: Array<[string[], RegExp]> = [
  [[], /error: no command given/],
  [['frobnicate'], /error: unknown command 'frobnicate'/],
  [['lab'], /error: 'lab' needs a subcommand: up, down or status/],
  [['lab', 'sideways'], /error: unknown lab subcommand 'sideways'/],
  [['lab', 'up', '--bogus'], /error: lab up: Unknown option '--bogus'/],
  [['lab', 'up', 'extra'], /error: lab up: .*positional/i],
  [['lab', 'up', '--name', 'Bad_Name'], /error: lab up: invalid --name 'Bad_Name'/],
  [['lab', 'down', '--name', 'x'.repeat(17)], /error: lab down: invalid --name/],
  [['lab', 'status', '-o', 'yaml'], /error: -o must be 'table' or 'json', got 'yaml'/],
  [['lab', 'status', '--name', 'main'], /error: lab status: Unknown option '--name'/],
]

for (const [args, message] of badArgs) {
  t.test(`l7proxy ${args.join(' ') || '(nothing)'}: usage error, exit 2`, async (t) => {
    const r = runCli(args)
    t.equal(r.code, 2, 'exit code 2')
    t.match(r.stderr, message, 'names the problem')
    t.match(r.stderr, /Usage: l7proxy <command>/, 'prints usage')
    t.equal(r.stdout, '', 'nothing on stdout')
  })
}

t.test('help prints usage on stdout, exit 0', async (t) => {
  for (const arg of ['help', '--help', '-h']) {
    const r = runCli([arg])
    t.equal(r.code, 0)
    t.match(r.stdout, /Usage: l7proxy <command>[\s\S]*lab up/)
  }
})
