// The prompt-injection rules: each a stable name (metric label, error message), a weight (the most
// it adds to a prompt's score) and the signals that make it up, each with its own weight. Patterns
// read the folded text of normalize.ts: lower case, one space between words, "\n" between lines.
// Every pattern is linear: alternations of literals and bounded repetitions, no nested quantifiers.

export const RULE_NAMES = [
  "instruction_override",
  "role_play_jailbreak",
  "developer_mode",
  "system_prompt_extraction",
  "delimiter_injection",
  "encoded_payload",
  "unicode_obfuscation",
] as const;
export type RuleName = (typeof RULE_NAMES)[number];

/** A prompt whose rule scores add up to this is an injection. */
export const INJECTION_THRESHOLD = 1;

/**
 * What a match counts when it only mentions an attack: it sits in a short quotation, or right
 * after "the phrase", and the prompt's own words (outside quotes) ask to translate, explain,
 * detect or discuss it.
 */
export const MENTION_FACTOR = 0.25;

export interface Signal {
  pattern: RegExp;
  weight: number;
  /** Matched against the un-folded text (case kept), for signals where case is the tell. */
  raw?: true;
  /**
   * The signal names the topic ("DAN", "jailbreak", one chat token) rather than saying the attack:
   * counted at MENTION_FACTOR when the prompt's framing (TOPIC_CONTEXT) asks about it.
   */
  topic?: true;
  /** Matches needed before the signal counts (structure: two chat-template tokens, two role tags). */
  minMatches?: number;
}

export interface Rule {
  name: RuleName;
  /** The most this rule adds to a prompt's score, however many of its signals match. */
  weight: number;
  /**
   * Words at least one of which every match of every signal contains (a literal alternation, cheap
   * to test): a prompt without any skips the rule's signals. A test checks it on the corpus.
   */
  trigger: RegExp | null;
  signals: readonly Signal[];
}

const W = String.raw;
/** Up to `n` words between two parts of a phrase (lazy, bounded). */
const gap = (n: number) => W`(?:\s\S+){0,${n}}?\s`;
/** Like gap(), but none of the words may be "my"/"our": "ignore my previous instructions" is a correction. */
const gapNotMine = (n: number) => W`(?:\s(?!my\b|our\b)\S+){0,${n}}?\s`;
const re = (source: string) => new RegExp(source);
const APOS = W`['’]`;

const OVERRIDE_VERB = W`(?:ignore|ignoring|disregard|disregarding|forget|forgetting|override|overriding|overrule|bypass|discard|abandon|neglect|dismiss|set\saside|put\saside|stop\sfollowing|throw\sout|scrap)`;
const EARLIER = W`(?:previous|previously|prior|preceding|above|earlier|former|foregoing|initial|original|system|developer|safety|your|hidden|default|pre-?set|existing)`;
const WEAK_EARLIER = W`(?:all|any|every|the|these|those|old|current)`;
const DIRECTIVES = W`(?:instructions?|instruction\sset|directions|directives?|rules|guidelines|guidance|prompts?|commands|orders|constraints|restrictions|programming|guardrails|policies|limitations|filters|training|conditioning|safeguards|protocols|principles|system\sprompt|context)`;

/** Literal words, joined into one alternation (apostrophes in both spellings). */
const words = (...list: string[]) =>
  new RegExp(list.map((w) => w.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&").replace(/'/g, "['’]")).join("|"));

const instructionOverride: Rule = {
  name: "instruction_override",
  weight: 1.5,
  trigger: words(
    "ignor",
    "disregard",
    "forget",
    "overrid",
    "overrul",
    "bypass",
    "discard",
    "abandon",
    "neglect",
    "dismiss",
    "aside",
    "throw out",
    "scrap",
    "follow",
    "obey",
    "listen to",
    "adhere",
    "comply",
    "abide",
    "respect",
    "instruction",
    "rules",
    "prompt",
    "direction",
    "guideline",
    "directive",
    "safety",
    "content",
    "moderation",
    "ethical",
    "task",
    "orders",
    "goal",
    "objective",
    "purpose",
    "role",
    "from now on",
    "oubli",
    "olvid",
    "vergiss",
    "vergessen",
    "missacht",
    "dimentic",
    "esquec",
  ),
  signals: [
    { pattern: re(W`\b${OVERRIDE_VERB}\b${gapNotMine(4)}${EARLIER}\b${gap(3)}${DIRECTIVES}\b`), weight: 1 },
    {
      pattern: re(W`\b${OVERRIDE_VERB}\b${gapNotMine(2)}${WEAK_EARLIER}\b${gap(2)}${DIRECTIVES}\b`),
      weight: 0.6,
    },
    {
      pattern: re(
        W`\b(?:do\snot|don't|never|no\slonger|stop|cease\sto|refuse\sto)\s(?:follow|obey|listen\sto|adhere\sto|comply\swith|abide\sby|respect)\b${gapNotMine(3)}${EARLIER}\b${gap(2)}${DIRECTIVES}\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:ignore|disregard|forget)\s(?:everything|all|anything)\s(?:(?:that\s)?you\s(?:were|have\sbeen|'ve\sbeen|are)\s(?:told|instructed|programmed|trained|given)|(?:written\s|said\s|stated\s)?(?:above|before\sthis|before\snow|prior\sto\sthis|previously|so\sfar|up\sto\snow|in\syour\s(?:system\s)?prompt))`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:above|previous|prior|preceding|earlier|original|initial|system|old)\s(?:instructions?|rules|prompt|directions|guidelines|directives)\s(?:are|is|were|was|have\sbeen|has\sbeen)\s(?:now\s|hereby\s)?(?:void|null|fake|a\stest|invalid|cancel+ed|revoked|obsolete|outdated|no\slonger\s(?:valid|in\seffect|apply|applicable|relevant)|overridden|superseded|lifted|removed|disabled|wrong|false|deprecated|suspended)\b|\b(?:above|previous|prior|preceding|earlier|original|initial|system|old)\s(?:instructions?|rules|prompt|directions|guidelines|directives)\s(?:don${APOS}t|do\snot|no\slonger|won${APOS}t|will\snot)\s(?:apply|count|matter)\b`,
      ),
      weight: 1,
    },
    {
      // "ignore the instructions above", "forget every rule you received earlier".
      pattern: re(
        W`\b${OVERRIDE_VERB}\s(?:(?:all|any|every|each)\s)?(?:of\s)?(?:the\s|your\s|those\s|these\s)?${DIRECTIVES}${gap(3)}?(?:above|before|earlier|previously|beforehand|so\sfar|until\snow|up\sto\snow|given|received|got|in\syour\s(?:system\s)?prompt)\b`,
      ),
      weight: 1,
    },
    {
      // "disregard what the system told you".
      pattern: re(
        W`\b${OVERRIDE_VERB}\s(?:what|whatever|anything|everything)\s(?:that\s)?(?:the\ssystem|the\sdevelopers?|your\sdevelopers?|your\screators?|the\soperator|openai|they|you\swere|you${APOS}ve\sbeen|you\shave\sbeen)\s(?:told|said|instructed|gave|wrote|taught|programmed)\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:disable|turn\soff|deactivate|switch\soff|remove|suspend|lift)\s(?:all\s(?:of\s)?)?(?:your|its)\s(?:\S+\s)?(?:safety|content|moderation|ethical)\s(?:settings|filters?|features|guidelines|mode|protocols|guardrails|restrictions|checks|rules)\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:new|updated|revised|real|actual|true|override|priority|urgent|admin|secret)\s(?:instructions?|directives?|system\sprompt|task|orders|rules)\s?:|\byour\s(?:new|real|actual|true)\s(?:task|instructions|goal|objective|purpose|role|directive)\s(?:is|are)\b`,
      ),
      weight: 0.6,
    },
    {
      pattern: re(W`\bfrom\snow\son\b.{0,40}?\byou\s(?:will|must|shall|are|should|have\sto|can)\b`),
      weight: 0.4,
    },
    {
      // French, Spanish, German, Italian, Portuguese (accents folded away).
      pattern: re(
        [
          W`\b(?:ignore[sz]?|ignorer|oublie[sz]?|oublier)\s(?:toutes?\s|tous\s)?(?:les\s|tes\s|vos\s)?(?:instructions|consignes|regles|directives|indications)\s(?:\S+\s)?(?:precedentes|anterieures|ci-dessus|initiales|du\ssysteme)`,
          W`\b(?:ignora|ignore|ignorar|olvida|olvide|olvidar)\s(?:todas?\s)?(?:las\s|tus\s|sus\s)?(?:instrucciones|reglas|indicaciones|directrices|ordenes)\s(?:\S+\s)?(?:anteriores|previas|de\sarriba|iniciales|del\ssistema)`,
          W`\b(?:ignoriere|ignorier|ignorieren\ssie|vergiss|vergessen\ssie|missachte)\s(?:alle\s)?(?:die\s|deine\s|ihre\s)?(?:vorherigen|bisherigen|obigen|vorigen|vorangegangenen|vorherige|bisherige|ursprunglichen|system)\w*\s(?:anweisungen|instruktionen|regeln|befehle|vorgaben)`,
          W`\b(?:ignora|dimentica)\s(?:tutte\s)?(?:le\s)?(?:istruzioni|regole|indicazioni)\s(?:\S+\s)?(?:precedenti|di\sprima|iniziali|del\ssistema)`,
          W`\b(?:ignore|ignora|esqueca)\s(?:todas\s)?(?:as\s)?(?:instrucoes|regras|orientacoes)\s(?:\S+\s)?(?:anteriores|previas|iniciais|do\ssistema)`,
        ].join("|"),
      ),
      weight: 1,
    },
  ],
};

const PERSONA_VERB = W`(?:you(?:\s(?:are|will\sbe)|${APOS}re)\s(?:now\s|going\sto\sbe\s)?|act\sas\s|acting\sas\s|pretend\s(?:to\sbe|you\sare)\s|role-?play\sas\s|simulate\s|become\s|behave\sas\s|respond\sas\s|answer\sas\s)`;
const NO_LIMITS = W`(?:restrictions|rules|limits|limitations|filters|filtering|censorship|guidelines|ethics|ethical\s(?:guidelines|constraints|boundaries|concerns)|morals|morality|boundaries|constraints|safeguards|content\spolic(?:y|ies)|polic(?:y|ies)|safety\s(?:measures|guidelines|protocols|features)|programming|principles|guardrails)`;

const rolePlayJailbreak: Rule = {
  name: "role_play_jailbreak",
  weight: 1.5,
  trigger: words(
    "dan",
    "d.a.n",
    "anything now",
    "you are",
    "you will be",
    "you're",
    "act as",
    "acting as",
    "pretend",
    "role-play",
    "roleplay",
    "simulate",
    "become",
    "behave",
    "respond as",
    "answer as",
    "machiavellian",
    "strive to avoid",
    "imagine",
    "from now on",
    "freed",
    "liberated",
    "unchained",
    "unleashed",
    "released from",
    "set free",
    "without",
    "with no",
    "free of",
    "free from",
    "has no",
    "have no",
    "no longer",
    "bound by",
    "ignor",
    "follow",
    "restricted by",
    "limited by",
    "character",
    "anything",
    "everything",
    "whatever",
    "answer any",
    "answer every",
    "answer all",
    "refuse",
    "decline",
    "say no",
    "reject",
    "comply",
    "obey",
    "unfiltered",
    "uncensored",
    "unrestricted",
    "unlimited power",
    "unethical",
    "amoral",
    "immoral",
    "no filter",
    "no censorship",
    "no morals",
    "no ethics",
    "polic",
    "openai",
    "anthropic",
    "meta",
    "google",
    "jailbr",
    "responses",
    "answers",
    "paragraphs",
    "outputs",
    "replies",
    "classic]",
    "locked]",
    "my deceased",
    "my dead",
    "my late",
    "my departed",
    "used to",
  ),
  signals: [
    // DAN is spelled in capitals; "Dan" is also a name.
    { pattern: /\bDAN\b|\bD\.A\.N\b/, weight: 0.5, raw: true, topic: true },
    {
      pattern:
        /\b(?:[Yy]ou(?:\s+(?:are|will\s+be)|['’]re)\s+(?:now\s+)?|[Aa]ct\s+as\s+|[Pp]retend\s+(?:to\s+be|you\s+are)\s+|[Ss]tay\s+(?:as\s+)?|[Aa]nswer\s+as\s+)DAN\b/,
      weight: 1,
      raw: true,
    },
    { pattern: re(W`\bdo\sanything\snow\b|\bdan\smode\b`), weight: 1 },
    { pattern: re(W`\bdan\s(?:prompt|jailbreak)s?\b`), weight: 0.5, topic: true },
    {
      pattern: re(
        W`\b${PERSONA_VERB}(?:an?\s)?(?:aim|stan|dude|mongo\stom|evil\sconfidant|betterdan|better\sdan|anti-?dan|evilbot|chaosgpt|alphabreak|omega|maximum|jailbroken\s(?:ai|model|assistant|chatbot|version)|(?:unfiltered|uncensored|unrestricted)\s(?:ai|model|assistant|chatbot|llm|version))\b|\balways\sintelligent\sand\smachiavellian\b|\bstrive\sto\savoid\snorms\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:you\sare\s(?:now|going\sto\s(?:be|act|pretend))|act\sas|pretend\s(?:to\sbe|you\s(?:are|have))|role-?play\sas|imagine\s(?:you\sare|that\syou\sare)|simulate\s(?:an?|being)|from\snow\son\syou\s(?:are|will)|become\s(?:an?\s)?(?:ai|assistant|model|chatbot|bot|llm))\b`,
      ),
      weight: 0.3,
    },
    {
      pattern: re(
        W`\byou(?:\s(?:have|are)|${APOS}ve|${APOS}re)\s(?:been\s|now\s){0,2}(?:freed|liberated|unchained|unleashed|released\sfrom|set\sfree)\b`,
      ),
      weight: 0.5,
    },
    {
      pattern: re(
        W`\b(?:without|with\sno|free\s(?:of|from)|has\sno|have\sno|no\slonger\s(?:has|have)|not\sbound\sby|isn't\sbound\sby|no\slonger\sbound\sby|unbound\sby|broken\sfree\sof|breaks?\sfree\sof|ignores?|doesn't\sfollow|does\snot\sfollow|don't\shave\sto\sfollow|no\sneed\sto\sfollow|not\srestricted\sby|not\slimited\sby)\s(?:any\s|all\s|the\s|your\s|its\s|their\s|typical\s|usual\s|normal\s|of\s){0,3}(?:\S+\s)?${NO_LIMITS}\b`,
      ),
      weight: 0.7,
    },
    {
      pattern: re(
        W`\b(?:stay|remain|keep)\s(?:in\s)?character\b|\bnever\sbreak\scharacter\b|\bbreak(?:ing)?\scharacter\b`,
      ),
      weight: 0.4,
    },
    {
      pattern: re(
        W`\b(?:you|who|that|which)\s(?:can|will|must|shall)\s(?:now\s)?(?:say|do|answer|generate|write|tell)\s(?:me\s)?(?:anything|everything|whatever)\b|\b(?:comply|obey)\s(?:with\s)?(?:every|all|any)\s(?:request|command|instruction|order)s?\b|\banswer\s(?:any|every|all)\s(?:question|request|prompt)s?\s(?:without|no\smatter)\b|\b(?:never|do\snot|don't|will\snot|won't|cannot|can't|must\snot)\s(?:refuses?|declines?|says?\sno|rejects?)\b`,
      ),
      weight: 0.5,
    },
    {
      pattern: re(
        W`\b(?:unfiltered|uncensored|unrestricted|unlimited\spower|unethical|amoral|immoral|no\s(?:filter|filters|censorship|morals|ethics))\b`,
      ),
      weight: 0.4,
    },
    {
      pattern: re(
        W`\b(?:openai|anthropic|meta|google)(?:'s)?\s(?:content\s|usage\s|safety\s)?(?:polic(?:y|ies)|guidelines|rules)\b|\bcontent\spolic(?:y|ies)\b`,
      ),
      weight: 0.3,
      topic: true,
    },
    { pattern: re(W`\bjailbr(?:eak|eaks|eaking|oken)\b`), weight: 0.5, topic: true },
    {
      pattern: re(
        W`\b(?:two|2)\s(?:different\s|separate\s)?(?:responses|answers|paragraphs|outputs|replies)\b|\[(?:🔓|🔒)?\s?(?:jailbreak|classic|jailbroken|unlocked|locked)\]`,
      ),
      weight: 0.4,
    },
    {
      pattern: re(
        W`\b(?:act|pretend|role-?play|behave)\s(?:as|like|to\sbe)\smy\s(?:deceased|dead|late|departed)\s(?:grandma|grandmother|granny|grandpa|grandfather|mother|father|mom|dad)\b`,
      ),
      weight: 0.7,
    },
    {
      pattern: re(
        W`\bused\sto\s(?:tell|read|recite|whisper)\s(?:me\s)?.{0,60}?\b(?:steps|recipe|instructions|keys|codes|serial|how\sto\smake|formula)\b`,
      ),
      weight: 0.4,
    },
  ],
};

const MODE = W`(?:developer|dev|god|jailbreak|dan|unrestricted|sudo|admin|root|debug|maintenance|evil|opposite|chaos|unlocked|unfiltered|uncensored)`;

const developerMode: Rule = {
  name: "developer_mode",
  weight: 1.2,
  trigger: words(
    "mode",
    "developer",
    "creator",
    "admin",
    "owner",
    "operator",
    "programmer",
    "employee",
    "engineer",
    "staff",
    "researcher",
    "override",
    "access granted",
    "privileges granted",
    "authorization code",
  ),
  signals: [
    {
      pattern: re(
        W`\b(?:chatgpt|gpt|ai|assistant|model|llm|chatbot|you|yourself|claude|llama|gemini|bard|mistral)\s(?:with|in|under|running\sin|now\sin|operating\sin|entering)\s${MODE}\smode\b|\b${MODE}\smode\soutput\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b${MODE}\smode\s(?:is\s|has\sbeen\s)?(?:now\s)?(?:enabled|activated|engaged|unlocked|active|initiated|on(?=\s?[.!,;:)\]]|\s?$|\n))`,
      ),
      weight: 0.7,
      topic: true,
    },
    {
      pattern: re(
        W`\b(?:enable|activate|enter|switch\sto|turn\son|unlock|engage|initiate|boot\sinto)\s(?:the\s)?${MODE}\smode\b`,
      ),
      weight: 0.6,
      topic: true,
    },
    {
      pattern: re(
        W`\b(?:enable|activate|enter|switch\sto|turn\son|unlock|engage|initiate)\syour\s${MODE}\smode\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:i\sam|i'm|this\sis)\s(?:your|the|an?)\s(?:developer|creator|admin|administrator|owner|operator|programmer|(?:openai|anthropic)\s(?:employee|engineer|staff|researcher)|system\sadministrator)\b|\b(?:admin|administrator|root|sudo|developer|system)\s(?:override|access\sgranted|privileges\sgranted|authorization\scode)\b`,
      ),
      weight: 0.5,
    },
  ],
};

const EXTRACT_VERB = W`(?:what|tell\sme|show|print|reveal|repeat|output|display|give\sme|share|list|recite|write\sout|dump|leak|disclose|spell\sout|paste|copy|provide|send|echo|return|expose|read\sout|type\sout|quote|state)`;
const SYSTEM_PROMPT = W`(?:system\s(?:prompt|message|instructions?)|initial\s(?:prompt|instructions?)|original\s(?:prompt|instructions?)|hidden\s(?:prompt|instructions?)|secret\s(?:prompt|instructions?)|pre-?prompt|first\s(?:prompt|instructions?)|starting\s(?:prompt|instructions?)|developer\s(?:message|prompt|instructions?))`;

const systemPromptExtraction: Rule = {
  name: "system_prompt_extraction",
  weight: 1.2,
  trigger: words(
    "prompt",
    "instruction",
    "message",
    "guideline",
    "rules",
    "configuration",
    "directive",
    "programming",
    "context window",
    "above",
    "before",
    "so far",
    "preceding",
    "prior to",
    "the start",
    "the beginning",
    "the top",
    "verbatim",
    "word for word",
    "word-for-word",
    "exactly as",
    "in full",
    "unabridged",
    "without",
    "told",
    "instructed",
    "programmed",
    "given",
    "written",
    "said",
    "stated",
    "typed",
    "reply with",
    "response with",
    "answer with",
    "output with",
    "starting with",
    "starting from",
  ),
  signals: [
    {
      pattern: re(W`\b${EXTRACT_VERB}\b${gapNotMine(6)}(?:your|its)\s(?:\S+\s)?${SYSTEM_PROMPT}\b`),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:print|reveal|repeat|output|dump|leak|disclose|recite|paste|copy|echo|spell\sout|write\sout|type\sout|read\sout)\b${gapNotMine(3)}(?:your|its)\s(?:\S+\s)?(?:prompt|instructions|configuration|directives|programming)\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b${EXTRACT_VERB}\b${gapNotMine(4)}(?:your|its)\s(?:\S+\s)?(?:prompt|instructions|guidelines|rules|configuration|directives|programming|context\swindow)\b`,
      ),
      weight: 0.6,
    },
    {
      pattern: re(
        W`\b${EXTRACT_VERB}\b${gapNotMine(4)}the\s(?:system\s(?:prompt|message)|developer\s(?:message|prompt))\b`,
      ),
      weight: 0.7,
    },
    {
      pattern: re(
        W`\b${EXTRACT_VERB}\b${gapNotMine(4)}the\s(?:hidden|secret|initial|original|internal|confidential)\s(?:system\s)?(?:prompt|instructions|message|rules)\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:first|last|opening)\s(?:\d+\s|few\s|hundred\s)?(?:words|lines|sentences|characters|paragraphs|tokens)\s(?:of|from|in)\s(?:your|the\s(?:system|hidden|initial|original))\s(?:\S+\s)?(?:prompt|instructions|message)\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:prompt|instructions|rules|message)\s(?:that\s)?(?:the\s)?(?:developers?|operators?|creators?|company|admins?|openai)\s(?:gave|wrote\sfor|provided|set\sfor|programmed\sinto|gave\sto)\s(?:you|it)\b`,
      ),
      weight: 0.5,
    },
    {
      pattern: re(
        W`\b(?:repeat|print|output|recite|reproduce|copy|echo|show|write|display|type|spell|return|dump|paste)\s(?:back\s)?(?:to\sme\s|me\s)?(?:all\s|everything\s?|the\s|every\s|each\s|your\s)(?:\S+\s){0,4}?(?:above|before\sthis|before\sthat|before\s(?:my|this|the\suser${APOS}s)\s(?:first\s)?(?:message|question|input|prompt|request)|came\sbefore|so\sfar|preceding|prior\sto\sthis|at\sthe\s(?:start|beginning|top)|from\sthe\s(?:start|beginning|top))\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:verbatim|word\sfor\sword|word-for-word|exactly\sas\s(?:written|given)|in\sfull|unabridged|without\s(?:any\s)?(?:changes|modification|omission|summari[sz]ing))\b`,
      ),
      weight: 0.4,
    },
    {
      pattern: re(
        W`\bwhat\s(?:was|is)\s(?:written|said|stated|typed)\s(?:at|in)\sthe\s(?:beginning|start|top)\b|\bwhat\s(?:were|are)\syou\s(?:told|instructed|programmed|given)\b|\bwhat\s(?:instructions|rules|guidelines)\s(?:were|have)\syou\s(?:been\s)?(?:given|told)\b|\bwhat\sis\syour\s(?:system\s)?prompt\b|\bwhat(?:${APOS}s|\sis)\s(?:in|inside|written\sin)\s(?:your|the)\s${SYSTEM_PROMPT}|\bwhat\sare\syour\s(?:system\s|initial\s|original\s|hidden\s)instructions\b`,
      ),
      weight: 1,
    },
    {
      pattern: re(
        W`\b(?:begin|start)\s(?:your\s)?(?:reply|response|answer|output)\swith\s(?:the\s(?:words|text|phrase)\s)?["'“]?(?:you\sare|system|your\sinstructions)|\bstarting\s(?:with|from)\s["'“]?you\sare\b`,
      ),
      weight: 0.7,
    },
  ],
};

const CHAT_TOKEN = W`<\|[a-z_]{2,24}\|>|<\|\s?(?:im_start|im_end|endoftext|system|user|assistant)\s?\|>|\[\/?inst\]|<<\/?sys>>|<\/?(?:start_of_turn|end_of_turn)>|<\/s>\s?<s>`;
/** A chat token used, not named: not followed by "and", "or", a comma, a slash or "tags"/"tokens". */
const USED_CHAT_TOKEN = W`(?:${CHAT_TOKEN})(?!\s?(?:and|or|tags?|tokens?|markers?|delimiters?)\b|\s?[,/])`;
const ALPACA_HEADER = W`(?:^|\n)\s?#{2,4}\s?(?:instruction|instructions|response|human|assistant|user|input)\s?:`;
const ROLE_TAG = W`<\/?(?:system|sys|system_prompt|user|assistant|instructions?|admin|developer)>`;
const FAKE_BOUNDARY = W`(?:-{3,}|={3,}|\*{3,}|#{3,}|\[)\s?(?:(?:end|begin|start)\s(?:of\s)?(?:the\s)?(?:system|user|new|real|hidden|admin|original|conversation|chat|context|document|input)|new\s(?:system\s)?(?:prompt|instructions|rules))\s?(?:prompt|instructions|message|input)?|\[(?:system|admin|developer)(?:\s(?:message|note|override|instruction|prompt))?\s?[\]:]`;

const delimiterInjection: Rule = {
  name: "delimiter_injection",
  weight: 1.5,
  trigger: words(
    "<|",
    "[inst",
    "[/inst",
    "<<sys",
    "<</sys",
    "_of_turn",
    "</s>",
    "##",
    "system",
    "assistant",
    "developer",
    "<sys",
    "</sys",
    "<user",
    "</user",
    "<assistant",
    "</assistant",
    "<instruction",
    "</instruction",
    "<admin",
    "</admin",
    "<developer",
    "</developer",
    '"role"',
    "---",
    "===",
    "***",
    "[end",
    "[begin",
    "[start",
    "[new",
    "[system",
    "[admin",
    "[developer",
  ),
  signals: [
    // One chat token may be a question about templates; two, or one opening a role's turn, is structure.
    { pattern: re(CHAT_TOKEN), weight: 1, topic: true },
    { pattern: re(USED_CHAT_TOKEN), weight: 1, minMatches: 2 },
    { pattern: re(W`(?:${CHAT_TOKEN})\s?(?:system|user|assistant|model|developer|human)\b`), weight: 1 },
    {
      pattern: re(W`(?:^|\n)\s?#{2,4}\s?(?:new\s)?system(?:\sprompt|\smessage)?\s?:?(?:\n|$|\s)`),
      weight: 1,
    },
    { pattern: re(ALPACA_HEADER), weight: 0.6 },
    { pattern: re(ALPACA_HEADER), weight: 1, minMatches: 2 },
    {
      pattern: re(W`(?:^|\n)\s?(?:system|assistant|developer)(?:\smessage|\sprompt)?\s?:\s?\S`),
      weight: 0.4,
    },
    { pattern: re(ROLE_TAG), weight: 0.6 },
    { pattern: re(ROLE_TAG), weight: 1, minMatches: 2 },
    { pattern: re(W`"role"\s?:\s?"(?:system|developer)"`), weight: 0.6 },
    { pattern: re(FAKE_BOUNDARY), weight: 0.7 },
    { pattern: re(FAKE_BOUNDARY), weight: 1, minMatches: 2 },
  ],
};

/** Signals of the payload rule found by the patterns; decoded payloads are scored in injection.ts. */
const encodedPayload: Rule = {
  name: "encoded_payload",
  weight: 1.2,
  trigger: words("decode", "decrypt", "decipher", "unscramble", "reverse", "convert", "interpret"),
  signals: [
    {
      pattern: re(
        W`\b(?:decode|decrypt|decipher|unscramble|reverse|convert|interpret)\b(?:\s\S+){0,8}?\s(?:and|then|,)\s(?:then\s)?(?:follow|execute|do|obey|run|perform|carry\sout|comply|act\son|apply)\b`,
      ),
      weight: 0.6,
    },
  ],
};

/** Scored in injection.ts from what normalization found (tag characters, mixed-script words). */
const unicodeObfuscation: Rule = { name: "unicode_obfuscation", weight: 0.6, trigger: null, signals: [] };

export const RULES: readonly Rule[] = [
  instructionOverride,
  rolePlayJailbreak,
  developerMode,
  systemPromptExtraction,
  delimiterInjection,
  encodedPayload,
  unicodeObfuscation,
];

/** The weights normalization's findings add to unicode_obfuscation. */
export const OBFUSCATION_WEIGHTS = { smuggledTags: 0.6, mixedScript: 0.3, leet: 0.2 } as const;

/** Decoded payloads: one scored as an injection adds this to encoded_payload. */
export const DECODED_INJECTION_WEIGHT = 1;

/**
 * The prompt's own words that make a quoted attack a mention: asking to translate, explain,
 * classify or defend against it. Read outside quotations only (an attacker's quote cannot supply
 * it). Document tasks (summarize, proofread) are not here: a document is where indirect
 * injections hide.
 */
export const META_FRAMING = re(
  W`\b(?:translate|translat(?:ion|ing)|explain|explanation|what\s(?:is|are|does|do|did)|what's|define|definition|meaning|means?|examples?|detect(?:s|ing|ion|or)?|classif(?:y|ier|ication)|filters?|regex|research|paper|essay|article|blog|lecture|course|history|stud(?:y|ies)|defend|defen[cs]e|protect|prevent(?:ion)?|mitigat\w*|guard\sagainst|security|red-?team\w*|is\s(?:this|it|that)\s(?:a|an)|how\sdo\s(?:attackers|people|hackers)|why\sdo|keyword|phrase|sentence|string|quote|quoted|recogni[sz]e|flag|block|moderat\w*|test\scases?|dataset|benchmark|spanish|french|german|italian|japanese|chinese|portuguese|(?:if|when)\s(?:a|the|my)\s(?:user|customer|visitor|someone)\s(?:types?|says?|writes?|sends?|enters?|asks?|pastes?)|respond\sto|handle|prompt\sinjections?|injection\sattacks?)\b`,
);

/**
 * What makes a topic signal a mention: the meta framing, or a question about devices and software
 * (Android's developer mode) or about chat templates and tokenizers (one <|im_start|>).
 */
export const TOPIC_CONTEXT = re(
  W`${META_FRAMING.source}|\b(?:android|iphone|ios|ipad|chrome|firefox|safari|edge|windows|macos|linux|xcode|browser|phone|tablet|pixel|samsung|settings|vs\s?code|extension|device|laptop|router|bios|steam|minecraft|game|console|app|template|templates|tokeni[sz]\w*|chatml|jinja|gguf|format(?:ting)?)\b|\bwhy\s(?:does|do|did|is)\b|\bhow\s(?:do|can|should)\s(?:i|we)\b`,
);

/** "the phrase …", "strings like …" right before a match: the match is named, not said. */
export const MENTION_LEAD =
  /\b(?:phrases?|sentences?|strings?|words|terms?|expressions?|payloads?|attacks?|examples?|tokens?|text)(?:\s(?:like|such\sas|called|as|of))?\s?:?\s?$/;
