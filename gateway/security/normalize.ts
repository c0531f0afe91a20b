// Prompt text as the injection rules read it: one canonical spelling for the many ways Unicode lets
// the same words be written. Pure and allocation-light; ASCII text (most prompts) skips the
// Unicode passes entirely.

/** What the rules score: `folded` for phrases, `raw` for payloads whose case matters (base64). */
export interface NormalizedText {
  /** NFKC, invisible characters removed, Unicode tag characters decoded; case and letters kept. */
  raw: string;
  /** `raw` case-folded, accents and homoglyphs folded to Latin, spaced-out letters joined, whitespace collapsed. */
  folded: string;
  /** `folded` with leetspeak digits read as letters ("1gn0r3" -> "ignore"), when it has any; else null. */
  leet: string | null;
  /** Unicode tag characters (outside emoji flag sequences) were found: invisible ASCII smuggled in. */
  smuggledTags: boolean;
  /** A word mixes Latin with Cyrillic or Greek letters (a homoglyph spelling). */
  mixedScript: boolean;
}

// Zero-width, joiners, bidi embeddings/overrides/isolates, soft hyphen, fillers, variation selectors,
// the BOM: characters that render as nothing but split a word for a pattern.
const INVISIBLE =
  // biome-ignore lint/suspicious/noMisleadingCharacterClass: each code point is removed on its own, joiners too.
  /[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u202A-\u202E\u2060-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0]|\uDB40[\uDD00-\uDDEF]/g;
/** Unicode tag characters U+E0020-E007E (surrogates DB40 DC20-DC7E) mirror ASCII invisibly. */
const TAG_RUN = /(\uD83C\uDFF4)?((?:\uDB40[\uDC20-\uDC7F])+)/g;
const NON_ASCII = /[\u0080-\uffff]/;
const COMBINING = /\p{M}+/gu;

/**
 * Latin look-alikes from other scripts, after lower-casing (Cyrillic, Greek, Armenian, IPA). Only
 * letters a reader would take for the Latin one; NFKC already maps fullwidth and mathematical forms.
 */
const HOMOGLYPHS: Record<string, string> = {
  а: "a",
  в: "b",
  е: "e",
  ё: "e",
  һ: "h",
  і: "i",
  ї: "i",
  ј: "j",
  к: "k",
  ӏ: "l",
  м: "m",
  н: "h",
  о: "o",
  р: "p",
  ԛ: "q",
  с: "c",
  ѕ: "s",
  т: "t",
  у: "y",
  х: "x",
  ԁ: "d",
  ԝ: "w",
  ɑ: "a",
  ɡ: "g",
  ɩ: "i",
  ı: "i",
  ο: "o",
  α: "a",
  ε: "e",
  η: "n",
  ι: "i",
  κ: "k",
  ν: "v",
  ρ: "p",
  τ: "t",
  υ: "u",
  χ: "x",
  ω: "w",
  γ: "y",
  ϲ: "c",
  ϳ: "j",
  օ: "o",
  ո: "n",
  ս: "u",
  հ: "h",
  ց: "g",
  զ: "q",
};
const HOMOGLYPH_CLASS = new RegExp(`[${Object.keys(HOMOGLYPHS).join("")}]`, "g");
const WORD = /\p{L}{2,}/gu;
const LATIN = /\p{Script=Latin}/u;
const CYRILLIC_OR_GREEK = /[\p{Script=Cyrillic}\p{Script=Greek}]/u;

const LEET: Record<string, string> = {
  "0": "o",
  "1": "i",
  "3": "e",
  "4": "a",
  "5": "s",
  "7": "t",
  "8": "b",
  "@": "a",
  $: "s",
  "!": "i",
  "|": "l",
};
/** A run of letters, digits and leet symbols: a word when it has a letter ("1gn0r3", "pr3v10us"). */
const LEET_WORD = /[a-z0-9@$!|]+/g;
const HAS_LEET = /[a-z][0134578@$!|]|[0134578@$!|][a-z]/;
const LEET_CHAR = /[0134578@$!|]/g;
const HAS_LETTER = /[a-z]/;

/**
 * "i g n o r e", "i.g.n.o.r.e": four or more single letters joined by one separator each. Each
 * repetition decides on one character of look-ahead, so a long run costs linear time, not quadratic.
 */
const MAYBE_SPACED = /\b[a-z][ .\-_*|+][a-z][ .\-_*|+][a-z][ .\-_*|+][a-z]\b/;
const SPACED_LETTERS = /(?<![a-z])[a-z](?![a-z])(?:[ .\-_*|+][a-z](?![a-z])){3,}/g;

/** Drops the run's own separator ("i.g.n.o.r.e a.l.l" -> "ignore all"); other separators stay breaks. */
function joinSpacedLetters(run: string): string {
  return run.split(run[1] as string).join("");
}

export function normalizeText(input: string): NormalizedText {
  let raw = input;
  let smuggledTags = false;
  let mixedScript = false;
  let folded: string;
  if (!NON_ASCII.test(raw)) {
    folded = raw.toLowerCase();
  } else {
    raw = raw.replace(TAG_RUN, (_match, flag: string | undefined, tags: string) => {
      // 🏴 + tags + cancel tag spells a subdivision flag (England, Scotland, Wales): an emoji.
      if (flag !== undefined) return flag;
      smuggledTags = true;
      let ascii = "";
      for (let i = 1; i < tags.length; i += 2) {
        const code = tags.charCodeAt(i) - 0xdc00;
        if (code >= 0x20 && code < 0x7f) ascii += String.fromCharCode(code);
      }
      return ` ${ascii} `;
    });
    raw = raw.normalize("NFKC").replace(INVISIBLE, "");
    mixedScript = hasMixedScriptWord(raw);
    folded = raw.toLowerCase();
    if (NON_ASCII.test(folded)) {
      folded = folded
        .normalize("NFD")
        .replace(COMBINING, "")
        .replace(HOMOGLYPH_CLASS, (c) => HOMOGLYPHS[c] ?? c);
    }
  }
  folded = collapseWhitespace(folded);
  if (MAYBE_SPACED.test(folded)) folded = folded.replace(SPACED_LETTERS, joinSpacedLetters);
  const leet = HAS_LEET.test(folded) ? foldLeet(folded) : null;
  return { raw, folded, leet: leet === folded ? null : leet, smuggledTags, mixedScript };
}

/** Runs of spaces and tabs become one space, runs of line breaks one "\n" (rules anchor on lines). */
function collapseWhitespace(text: string): string {
  // Only what needs replacing is matched (two or more blanks, or a blank that is not a space):
  // V8 runs a negated class like [^\S\n] several times slower.
  let out = text.replace(BLANKS, " ");
  if (out.includes("\n")) out = out.replace(/ ?\n\s*/g, "\n");
  return out.trim();
}

/** Blanks other than "\n" that NFKC leaves (it maps the no-break and typographic spaces to " "). */
const BLANKS = /[ \t\r\f\v\u1680\u2028\u2029]{2,}|[\t\r\f\v\u1680\u2028\u2029]/g;

function foldLeet(text: string): string {
  return text.replace(LEET_WORD, (word) => {
    // Numbers ("2024", "3.5") stay numbers: only words with a letter in them are read as leet.
    if (!HAS_LETTER.test(word) || !HAS_LEET.test(word)) return word;
    return word.replace(LEET_CHAR, (c) => LEET[c] ?? c);
  });
}

function hasMixedScriptWord(text: string): boolean {
  for (const [word] of text.matchAll(WORD)) {
    if (LATIN.test(word) && CYRILLIC_OR_GREEK.test(word)) return true;
  }
  return false;
}
