// Reads the YAML that ops/ writes (Prometheus rules and their tests, Prometheus and Grafana
// provisioning config): block mappings and sequences, plain and quoted scalars, `|`/`>` block
// scalars and flow sequences of scalars. Anything else throws rather than being misread. Scalars
// stay strings. The package has no YAML parser and this file may not add one; promtool still
// parses the real thing, and the tests compare its rule count with this reader's.

export type YamlValue = string | null | YamlValue[] | { [key: string]: YamlValue };

interface Line {
  indent: number;
  text: string;
  no: number;
}

const KEY = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'#[\]{},&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s+|$)/;

export function parseYaml(text: string): YamlValue {
  const lines = text.split(/\r?\n/).map((raw, i) => {
    if (/\t/.test(raw.match(/^\s*/)?.[0] ?? "")) throw new Error(`line ${i + 1}: tab in indentation`);
    const indent = raw.length - raw.trimStart().length;
    return { indent, text: raw.trimEnd().slice(indent), no: i + 1 };
  });
  const reader = new Reader(lines);
  const value = reader.node(0);
  reader.skip();
  if (!reader.done()) throw new Error(`line ${reader.peek().no}: unexpected content`);
  return value;
}

class Reader {
  #i = 0;
  constructor(readonly lines: Line[]) {}

  done(): boolean {
    return this.#i >= this.lines.length;
  }

  peek(): Line {
    const line = this.lines[this.#i];
    if (!line) throw new Error("unexpected end of input");
    return line;
  }

  /** Past blank lines, comment lines and the document start marker. */
  skip(): void {
    while (!this.done()) {
      const t = this.peek().text;
      if (t === "" || t.startsWith("#") || (t === "---" && this.peek().indent === 0)) this.#i++;
      else break;
    }
  }

  node(minIndent: number): YamlValue {
    this.skip();
    if (this.done()) return null;
    const line = this.peek();
    if (line.indent < minIndent) return null;
    if (line.text === "-" || line.text.startsWith("- ")) return this.sequence(line.indent);
    if (KEY.test(line.text)) return this.mapping(line.indent);
    this.#i++;
    return scalar(line.text, line.no);
  }

  mapping(indent: number): { [key: string]: YamlValue } {
    const out: { [key: string]: YamlValue } = {};
    for (;;) {
      this.skip();
      if (this.done()) return out;
      const line = this.peek();
      if (line.indent < indent) return out;
      if (line.indent > indent) throw new Error(`line ${line.no}: unexpected indentation`);
      const m = KEY.exec(line.text);
      if (!m?.[1]) return out;
      const key = unquote(m[1], line.no);
      if (key in out) throw new Error(`line ${line.no}: duplicate key ${key}`);
      const rest = line.text.slice(m[0].length);
      this.#i++;
      out[key] = this.value(rest, indent, line.no);
    }
  }

  sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    for (;;) {
      this.skip();
      if (this.done()) return out;
      const line = this.peek();
      if (line.indent !== indent || !(line.text === "-" || line.text.startsWith("- "))) {
        if (line.indent > indent) throw new Error(`line ${line.no}: unexpected indentation`);
        return out;
      }
      const content = line.text.slice(1).trimStart();
      if (content === "") {
        this.#i++;
        out.push(this.node(indent + 1));
      } else if (KEY.test(content) || content.startsWith("- ")) {
        // "- key: value": the item is a mapping (or sequence) starting at the content's column.
        const column = indent + (line.text.length - content.length);
        this.lines[this.#i] = { indent: column, text: content, no: line.no };
        out.push(this.node(column));
      } else {
        this.#i++;
        out.push(scalar(content, line.no));
      }
    }
  }

  /** A mapping value: inline, a block scalar, or a nested block (a sequence may sit at the key's indent). */
  value(rest: string, indent: number, no: number): YamlValue {
    const block = /^([|>])([+-]?)\s*(#.*)?$/.exec(rest);
    if (block) return this.blockScalar(indent, block[1] === ">", block[2] ?? "");
    if (rest !== "" && !rest.startsWith("#")) return scalar(rest, no);
    this.skip();
    if (this.done()) return null;
    const next = this.peek();
    if (next.indent > indent) return this.node(indent + 1);
    if (next.indent === indent && (next.text === "-" || next.text.startsWith("- ")))
      return this.sequence(indent);
    return null;
  }

  blockScalar(parentIndent: number, folded: boolean, chomp: string): string {
    const body: string[] = [];
    let blockIndent = -1;
    while (!this.done()) {
      const line = this.peek();
      if (line.text !== "") {
        if (line.indent <= parentIndent) break;
        if (blockIndent < 0) blockIndent = line.indent;
        if (line.indent < blockIndent) throw new Error(`line ${line.no}: block scalar indentation`);
        body.push(" ".repeat(line.indent - blockIndent) + line.text);
      } else body.push("");
      this.#i++;
    }
    while (body.length > 0 && body[body.length - 1] === "") body.pop();
    const text = folded ? body.join("\n").replace(/([^\n])\n(?=[^\n ])/g, "$1 ") : body.join("\n");
    return chomp === "-" ? text : `${text}\n`;
  }
}

function scalar(raw: string, no: number): YamlValue {
  const text = raw.trim();
  if (text.startsWith('"') || text.startsWith("'")) {
    const m = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*')\s*(#.*)?$/.exec(text);
    if (!m?.[1]) throw new Error(`line ${no}: unterminated or trailing text after a quoted scalar`);
    return unquote(m[1], no);
  }
  if (text.startsWith("[")) return flowSequence(text, no);
  if (text === "{}") return {};
  if (/^[{&*!%@`]/.test(text)) throw new Error(`line ${no}: unsupported YAML: ${text}`);
  const plain = text.replace(/\s+#.*$/, "");
  if (/:\s/.test(plain)) throw new Error(`line ${no}: ": " inside a plain scalar`);
  return plain === "~" || plain === "null" ? null : plain;
}

function flowSequence(text: string, no: number): YamlValue[] {
  const m = /^\[(.*)\]\s*(#.*)?$/.exec(text);
  if (!m) throw new Error(`line ${no}: unsupported flow collection: ${text}`);
  const inner = (m[1] ?? "").trim();
  if (inner === "") return [];
  const items = inner.match(/"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,\s][^,]*/g) ?? [];
  return items.map((item) => {
    if (/^[[{]/.test(item)) throw new Error(`line ${no}: nested flow collections are not supported`);
    return scalar(item, no);
  });
}

function unquote(text: string, no: number): string {
  if (text.startsWith("'")) return text.slice(1, -1).replaceAll("''", "'");
  if (text.startsWith('"')) {
    try {
      return JSON.parse(text) as string;
    } catch {
      throw new Error(`line ${no}: unsupported escape in ${text}`);
    }
  }
  return text.trim();
}
