// Pure helpers for the model page: Prometheus text parsing and secret masking.

/** Prometheus text format -> [{name, labels, value}] (comments skipped). */
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const label of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1]] = label[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

/** Names that end like a secret's: apiKey, api_key, HF_TOKEN, password, authorization... */
const SECRET_NAME = /(key|token|secret|password|passwd|authorization|credentials?)$/i;
const MASK = "••••••";

/** A copy with secret-looking values masked: keys named like secrets, `--api-key X` flags,
 *  NAME=value pairs with secret names, and bearer tokens inside strings. A name must end
 *  like a secret's (`--hf-token`, not `--token-delay`; `apiKey`, not `max_tokens`). */
export function maskSecrets(value, name = "") {
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, name));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskSecrets(v, k)]));
  }
  if (typeof value !== "string") return value;
  if (name && SECRET_NAME.test(name)) return MASK;
  return value
    .replace(/(--?[\w-]*(?:key|token|secret|password))(\s+|=)("[^"]*"|'[^']*'|\S+)/gi, `$1$2${MASK}`)
    .replace(/\b([A-Z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD))=("[^"]*"|'[^']*'|\S+)/g, `$1=${MASK}`)
    .replace(/(Bearer\s+)\S+/gi, `$1${MASK}`);
}
