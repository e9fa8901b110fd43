// actorao bench's baseline on ao's reference loader (@permaweb/ao-loader): the same module and the same
// messages as our VM gets, timed here, in Node, and reported as JSON.
//
// Usage: node --experimental-wasm-memory64 ao_loader.mjs JOB.json
// JOB: {"loader": folder holding node_modules/@permaweb/ao-loader, "wasm": path, "options": {...AoLoader
//       options}, "unsafe_memory": bool, "lockstep": bool, "env": {...}, "phases": [{"name": str,
//       "messages": [message, ...]}, ...]}
// Out, without lockstep: one document on stdout, {"phases": [{"name", "seconds", "cpu_seconds", "results": [{Output,
//       Messages, Spawns, Error}, ...]}, ...], "memory_sha256", "memory_size"}.
// With lockstep, the caller says which messages to run when, so that its own runs and these alternate in
// small steps: each line on stdin is {"phase": index, "start": n, "count": n}, answered by one line
// {"seconds", "cpu_seconds", "results"} for those messages, or {"end": true}, answered by {"memory_sha256", "memory_size"}.
// Every answer line starts with REPLY, so that anything else a module prints is not taken for one; the
// first, {"ready": true}, says the module is loaded.
//
// Each message is handed the previous result's Memory, as ao's CU does (servers/cu/src/effects/worker/
// evaluate.js). Without UNSAFE_MEMORY that Memory is a copy of the whole heap (the loader's
// HEAPU8.slice()), and the next call copies it back in (HEAPU8.set): two heap copies per message. With
// it, the loader hands out the heap's own ArrayBuffer, and set() of an ArrayBuffer copies nothing (it is
// not array-like: its length is 0), so no heap is copied: the loader's best case. The timers, wall clock
// and the process's CPU time, cover only the calls.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const REPLY = '@actorao-reply '
const job = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const AoLoader = createRequire(join(job.loader, 'package.json'))('@permaweb/ao-loader')

// A CU runs in UTC with no arguments; the older glues read both (see tests/js-loader/run_loader.mjs).
process.argv.splice(1, process.argv.length - 1, './this.program')
process.env.TZ = 'UTC'

async function main () {
  const handle = await AoLoader(readFileSync(job.wasm), { ...job.options, UNSAFE_MEMORY: job.unsafe_memory })
  let memory = new Uint8Array(0) // as the CU hands the first message

  async function run (messages) {
    const results = []
    const start = process.hrtime.bigint()
    const cpuStart = process.cpuUsage()
    for (const message of messages) {
      const result = await handle(memory, message, job.env)
      memory = result.Memory
      results.push({ Output: result.Output, Messages: result.Messages, Spawns: result.Spawns, Error: result.Error })
    }
    const cpu = process.cpuUsage(cpuStart) // the whole process's, in µs: V8's helper threads count too
    return { seconds: Number(process.hrtime.bigint() - start) / 1e9, cpu_seconds: (cpu.user + cpu.system) / 1e6, results }
  }

  function memoryDigest () {
    const heap = memory instanceof ArrayBuffer ? new Uint8Array(memory) : memory
    return { memory_sha256: createHash('sha256').update(heap).digest('hex'), memory_size: heap.byteLength }
  }

  if (!job.lockstep) {
    const phases = []
    for (const phase of job.phases) phases.push({ name: phase.name, ...await run(phase.messages) })
    process.stdout.write(JSON.stringify({ phases, ...memoryDigest() }) + '\n')
    return
  }
  const reply = (doc) => process.stdout.write(REPLY + JSON.stringify(doc) + '\n')
  reply({ ready: true })
  for await (const line of createInterface({ input: process.stdin })) {
    const step = JSON.parse(line)
    if (step.end) {
      reply(memoryDigest())
      return
    }
    reply(await run(job.phases[step.phase].messages.slice(step.start, step.start + step.count)))
  }
}

main().catch((error) => {
  // The loader throws the module's response when ok is false: say what it was.
  const text = error && typeof error === 'object' && 'Error' in error ? `module error: ${error.Error}` : error?.stack
  process.stderr.write(String(text ?? error) + '\n')
  process.exit(1)
})
