/**
 * highlight.js core with only the languages a sandbox usually holds, loaded on the first
 * preview (the full bundle is ~1 MB). Its output is escaped HTML, safe for {@html}.
 */
import type { HLJSApi } from "highlight.js";

let loading: Promise<HLJSApi> | undefined;

function load(): Promise<HLJSApi> {
  loading ??= (async () => {
    const [core, js, ts, json, python, bash, yaml, markdown, plaintext] = await Promise.all([
      import("highlight.js/lib/core"),
      import("highlight.js/lib/languages/javascript"),
      import("highlight.js/lib/languages/typescript"),
      import("highlight.js/lib/languages/json"),
      import("highlight.js/lib/languages/python"),
      import("highlight.js/lib/languages/bash"),
      import("highlight.js/lib/languages/yaml"),
      import("highlight.js/lib/languages/markdown"),
      import("highlight.js/lib/languages/plaintext"),
      import("highlight.js/styles/github-dark.css"),
    ]);
    const hljs = core.default;
    hljs.registerLanguage("javascript", js.default);
    hljs.registerLanguage("typescript", ts.default);
    hljs.registerLanguage("json", json.default);
    hljs.registerLanguage("python", python.default);
    hljs.registerLanguage("bash", bash.default);
    hljs.registerLanguage("yaml", yaml.default);
    hljs.registerLanguage("markdown", markdown.default);
    hljs.registerLanguage("plaintext", plaintext.default);
    return hljs;
  })();
  return loading;
}

export async function highlight(text: string, language: string): Promise<string> {
  const hljs = await load();
  return hljs.highlight(text, { language, ignoreIllegals: true }).value;
}
