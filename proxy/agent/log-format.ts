// Log lines for a person at a terminal: each of pino's JSON lines as one readable line
// (pino-pretty), with the time and level first. Scripts and files get the JSON.

import { prettyFactory } from 'pino-pretty'

export function terminalLines(colorize: boolean): (text: string) => string {
  const pretty = prettyFactory({ colorize, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
  return (text) => {
    let out = ''
    for (const line of text.split('\n')) if (line) out += pretty(line)
    return out
  }
}
