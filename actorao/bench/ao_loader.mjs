// actorao bench's baseline on ao's reference loader (@permaweb/ao-loader): the same module and the same
// messages as our VM gets, timed here, in Node, and reported as one JSON document on stdout.
//
// Usage: node --experimental-wasm-memory64 ao_loader.mjs JOB.json
// JOB: {"loader": folder holding node_modules/@permaweb/ao-loader, "wasm": path, "options": {...AoLoader
//       options}, "unsafe_memory": bool, "env": {...}, "phases": [{"name": str,
//       "messages": [message, ...]}, ...]}
// Out: {"phases": [{"name", "seconds", "results": [{Output, Messages, Spawns, Error}, ...]}, ...],
//       "memory_sha256", "memory_size"}
//
// Each message is handed the previous result's Memory, as ao's CU does (servers/cu/src/effects/worker/
// evaluate.js). Without UNSAFE_MEMORY that Memory is a copy of the whole heap (the loader's
// HEAPU8.slice()), and the next call copies it back in (HEAPU8.set): two heap copies per message. With
// it, the loader hands out the heap's own ArrayBuffer, and set() of an ArrayBuffer copies nothing (it is
// not array-like: its length is 0), so no heap is copied: the loader's best case. The timer covers only
// the calls; each phase's results are kept (without Memory) and printed after the last one.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const AoLoader = createRequire(join(job.loader, 'package.json'))('@permaweb/ao-loader')

// A CU runs in UTC with no arguments; the older glues read both (see tests/js-loader/run_loader.mjs).
process.argv.splice(1, process.argv.length - 1, './this.program')
process.env.TZ = 'UTC'

async function main () {
  const handle = await AoLoader(readFileSync(job.wasm), { ...job.options, UNSAFE_MEMORY: job.unsafe_memory })
  let memory = new Uint8Array(0) // as the CU hands the first message
  const phases = []
  for (const phase of job.phases) {
    const results = []
    const start = process.hrtime.bigint()
    for (const message of phase.messages) {
      const result = await handle(memory, message, job.env)
      memory = result.Memory
      results.push({ Output: result.Output, Messages: result.Messages, Spawns: result.Spawns, Error: result.Error })
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    phases.push({ name: phase.name, seconds, results })
  }
  const heap = memory instanceof ArrayBuffer ? new Uint8Array(memory) : memory
  const memorySha256 = createHash('sha256').update(heap).digest('hex')
  process.stdout.write(JSON.stringify({ phases, memory_sha256: memorySha256, memory_size: heap.byteLength }) + '\n')
}

main().catch((error) => {
  // The loader throws the module's response when ok is false: say what it was.
  const text = error && typeof error === 'object' && 'Error' in error ? `module error: ${error.Error}` : error?.stack
  process.stderr.write(String(text ?? error) + '\n')
  process.exit(1)
})
