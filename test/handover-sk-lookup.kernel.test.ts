// Ten agents in a row take over from one another under load in sk-lookup mode; nothing fails
// (test/fixtures/handover-load.ts).

import t from 'tap'
import { handoverUnderLoad } from './fixtures/handover-load.js'

handoverUnderLoad(t, 'sk-lookup')
