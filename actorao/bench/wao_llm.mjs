// WAO's in-memory AO (npm wao, pinned) running aos-llama's llama.wasm on a model, as the baseline of
// `actorao bench --workloads llm`. Usage: node wao_llm.mjs LLAMA_WASM MODEL_GGUF PROMPT TOKENS ROUNDS
// Prints one JSON line: the load's seconds, then each round's seconds and output.
import { readFileSync } from "node:fs"
import { AO, acc } from "wao/test"

const [wasmPath, modelPath, prompt, tokens, rounds] = process.argv.slice(2)
const ao = await new AO({ log: false }).init(acc[0])
const signer = ao.toSigner(acc[0].jwk)
const { id: model } = await ao.ar.post({ data: readFileSync(modelPath), tags: { "Content-Type": "application/octet-stream" } })
const { id: module } = await ao.postModule({ data: readFileSync(wasmPath), tags: { "Memory-Limit": "4-gb" } })
const { pid } = await ao.deploy({ module, tags: { Extension: "WeaveDrive", Attestor: acc[0].addr } })
await ao.attest({ id: model })

async function evaluate(code) {
  const message = await ao.message({ process: pid, signer, data: code, tags: [{ name: "Action", value: "Eval" }] })
  const result = await ao.result({ process: pid, message })
  if (result.Error) throw new Error(String(result.Error))
  return result.Output?.data
}

let started = performance.now()
await evaluate(`require('.Llama'); Llama.load('/data/${model}'); return 'loaded'`)
const load = (performance.now() - started) / 1000
const runs = []
for (let round = 0; round < Number(rounds); round++) {
  started = performance.now()
  const output = await evaluate(`Llama.setPrompt(${JSON.stringify(prompt)}); return Llama.run(${Number(tokens)})`)
  runs.push({ seconds: (performance.now() - started) / 1000, output })
}
console.log(JSON.stringify({ load, runs }))
process.exit(0)
