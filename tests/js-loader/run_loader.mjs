// Runs one module through ao's reference loader (@permaweb/ao-loader, pinned in package.json) the way
// ao's CU drives it (servers/cu/src/effects/worker/evaluate.js): one cached instance per process, the
// previous result's Memory handed back in with every message, and after an Error the instance
// dropped, the memory kept from before the message, and a fresh instance made for the next one.
//
// Usage: node --experimental-wasm-memory64 run_loader.mjs JOB.json
// JOB: {"wasm": path, "options": {...AoLoader options}, "env": {...}, "messages": [message, ...]}
// Prints one JSON line per message: Output, Messages, Spawns, Assignments, Error, and the SHA-256 and
// byte length of linear memory after it.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const AoLoader = require('@permaweb/ao-loader')

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'))

// The older glues hand the module the host process's argv: the program's name is argv[1] (the CU's
// own path) and main's arguments are the rest. A CU is started with no arguments; its path is made
// emscripten's default here, which is what actorao serves. The time zone is the host's: ao's CUs
// run in UTC.
process.argv.splice(1, process.argv.length - 1, './this.program')
process.env.TZ = 'UTC'

const wasm = readFileSync(job.wasm)

function digest (memory) {
  return createHash('sha256').update(memory).digest('hex')
}

async function main () {
  let handle = null
  let memory = null
  for (const message of job.messages) {
    if (handle === null) handle = await AoLoader(wasm, { ...job.options })
    let line
    try {
      // as the CU does: the previous Memory, or an empty buffer before the first message
      const result = await handle(memory ?? new Uint8Array(0), message, job.env)
      // the CU keeps the memory from before a message whose result has an Error, and drops the instance
      if (result.Error) handle = null
      else memory = result.Memory
      line = {
        Output: result.Output ?? '',
        Messages: result.Messages ?? [],
        Spawns: result.Spawns ?? [],
        Assignments: result.Assignments ?? [],
        Error: result.Error ?? null
      }
    } catch (thrown) {
      // The loader throws the module's response when ok is false, or whatever the wasm threw.
      handle = null
      const error = thrown && typeof thrown === 'object' && 'Error' in thrown ? thrown.Error : String(thrown)
      line = { Output: thrown?.Output ?? '', Messages: [], Spawns: [], Assignments: [], Error: error, threw: true }
    }
    line.memory_sha256 = memory === null ? null : digest(memory)
    line.memory_size = memory === null ? 0 : memory.byteLength
    process.stdout.write(JSON.stringify(line) + '\n')
  }
}

main().catch((error) => {
  process.stderr.write(String(error?.stack ?? error) + '\n')
  process.exit(1)
})
