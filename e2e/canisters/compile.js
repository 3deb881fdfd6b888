// Compiles a Motoko canister to IC wasm with the `motoko` npm package (the Motoko compiler
// running in Node): node compile.js SOURCE.mo OUT.wasm
const fs = require('fs');
const path = require('path');
const mo = require('motoko');

const [src, out] = process.argv.slice(2);
if (!src || !out) {
  console.error('usage: node compile.js SOURCE.mo OUT.wasm');
  process.exit(2);
}
// Motoko's core library (`mo:core/...`), as the package bundles it.
mo.loadPackage(require('motoko/packages/latest/core.json'));
// The modules next to the source, which it may import by name (`import Sha256 "Sha256"`).
const dir = path.dirname(src);
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.mo'))) {
  mo.write(file, fs.readFileSync(path.join(dir, file), 'utf8'));
}
const name = path.basename(src);
mo.write(name, fs.readFileSync(src, 'utf8'));
let result;
try {
  result = mo.wasm(name, 'ic');
} catch (e) {
  // The compiler's exception carries its whole minified source; the message is what matters.
  console.error(`moc: ${name}: ${String(e.message || e).split('\n')[0]}`);
  process.exit(1);
}
fs.writeFileSync(out, result.wasm);
fs.writeFileSync(out.replace(/\.wasm$/, '.did'), result.candid);
