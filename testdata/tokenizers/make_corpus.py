#!/usr/bin/env python3
"""Writes testdata/tokenizers/corpus.txt: a few thousand lines of varied text for the tokenizer
conformance test (fp4c's token ids against the `tokenizers` and `sentencepiece` libraries).

Handwritten fragments (prose, accents in composed and decomposed form, CJK, Hangul, emoji with ZWJ
sequences, code, numbers, whitespace runs, special-token look-alikes, contractions) are printed as
they are, then mixed deterministically (seeded) into longer lines. Lines hold no '\\n' or '\\r';
the test joins lines itself to cover newlines.

Run from the repository root: python3 testdata/tokenizers/make_corpus.py > testdata/tokenizers/corpus.txt
"""
import random
import sys

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
    "She said: \"I'LL be there at 5 o'clock, won't you?\" and he'd replied they've already gone.",
    "WE'RE NOT SURE WHAT YOU'VE DONE, BUT IT'S WORKING. I'M IMPRESSED; THEY'D AGREE.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    "One day, Tom found a shiny red ball in the park. He was very happy and ran to show his mom.",
    "The model was quantized to NVFP4 (4-bit floats with FP8 block scales) and lost 0.3% accuracy.",
    "Calibration runs layer by layer; each layer's weights are read once per pass.",
    "A man, a plan, a canal: Panama!",
    "Hello, world! How are you doing today?? Fine... thanks!!!",
    "   leading spaces, and trailing ones   ",
    "tabs\tbetween\t\twords\t\t\tand\tmore",
    "Mixed    runs     of      spaces       here.",
    "e-mail: someone@example.com, web: https://example.org/path?q=1&r=two#frag",
    "Prices: $5.99, €12,50, £7, ¥1000, ₹250 — and 50% off (limited time).",
    "snake_case, camelCase, PascalCase, kebab-case, SCREAMING_SNAKE_CASE",
    "O'Neil's dog's bone isn't theirs; it's the Smiths' (y'all know).",
    "\"Quoted\" 'single' `backtick` «guillemets» „German“ “curly” ‘apostrophes’",
    "Ellipsis… em—dash en–dash minus − bullet • middle·dot",
    "",
    " ",
    "a",
    "I",
    "'s",
    "'S 'T 'RE 'VE 'M 'LL 'D",
    "don't DON'T Don'T can't we're WE'RE i'm I'M you'll YOU'LL he'd HE'D",
]

ACCENTS = [
    "Café, naïve, résumé, façade, coöperate, jalapeño, São Paulo, Zürich, Kraków.",
    "Cafe\u0301, nai\u0308ve, re\u0301sume\u0301 (decomposed accents)",
    "A\u030a\u0301 o\u0308\u0304 a\u0323\u0302 e\u0327\u0306 (stacked combining marks)",
    "\u0301 a combining mark at the start",
    "Ångström Ω ℃ K ﬁ ﬂ Ⅻ ①②③ (compatibility characters)",
    "\u212b \u2126 \u212a (singletons that NFC replaces)",
    "Ελληνικά: Καλημέρα κόσμε, ὦ ἄνθρωπε.",
    "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Українська: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Français: Voix ambiguë d'un cœur qui au zéphyr préfère les jattes de kiwis.",
    "Español: El pingüino Wenceslao hizo kilómetros bajo exhaustiva lluvia y frío.",
    "Deutsch: Falsches Üben von Xylophonmusik quält jeden größeren Zwerg.",
    "Tiếng Việt: Tôi có thể ăn thủy tinh mà không hại gì.",
    "Türkçe: Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul ıiİI",
    "العربية: نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق.",
    "עברית: דג סקרן שט בים מאוכזב ולפתע מצא חברה.",
    "हिन्दी: ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम।",
    "क़ ख़ ग़ (Devanagari nukta forms, NFC-excluded)",
    "ไทย: เป็นมนุษย์สุดประเสริฐเลิศคุณค่า",
    "ქართული: გთხოვთ ახლავე გაიაროთ რეგისტრაცია",
    "Հայերեն: Բարեւ աշխարհ",
]

CJK = [
    "中文：我能吞下玻璃而不伤身体。",
    "繁體中文：我能吞下玻璃而不傷身體。",
    "日本語：いろはにほへと ちりぬるを わかよたれそ つねならむ",
    "カタカナ：コンピューター、インターネット、データベース。",
    "漢字とかなの混じった文章です。東京は日本の首都です。",
    "한국어: 다람쥐 헌 쳇바퀴에 타고파. 나는 유리를 먹을 수 있어요.",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab (Hangul jamo that compose)",
    "한\u11ab 가\u11a8 (syllable plus trailing consonant)",
    "全角：ＡＢＣ　１２３　！？（）",
    "中文和English混合的text，还有数字123和符号！",
    "「括弧」『二重括弧』【隅付き】〜波ダッシュ〜",
    "　ideographic　spaces　between　words",
]

EMOJI = [
    "Emoji: 😀😃😄😁😆😅😂🤣 🥲 ☺️ 😊",
    "Family: 👨‍👩‍👧‍👦 Couple: 👩‍❤️‍👨 Flags: 🇺🇸🇫🇷🇯🇵🇩🇪 🏳️‍🌈",
    "Skin tones: 👋🏻👋🏼👋🏽👋🏾👋🏿 Thumbs: 👍👎",
    "Symbols: ✓ ✗ ★ ☆ ♥ ♦ ♣ ♠ ☀ ☁ ☂ ☃ ⚡ ❄ ✨",
    "Math: ∀x∈ℝ, ∃y: x² + y² ≤ 1 ⇒ √(x²+y²) ≤ 1; ∑ᵢ aᵢ ≠ ∏ⱼ bⱼ; ∞ ≈ ∂f/∂x",
    "Arrows → ← ↑ ↓ ↔ ⇐ ⇒ ⟶ and boxes ┌─┐│└─┘ ▁▂▃▄▅▆▇█",
    "🚀 launch at 09:30 🎉🎉🎉 (party)",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ and text-style ☎ vs emoji ☎️",
    "Rare planes: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝒮𝒸𝓇𝒾𝓅𝓉 𝟙𝟚𝟛 𐍈 𓀀 🀄",
]

CODE = [
    "def main(argv: list[str]) -> int:",
    "    return sum(x * x for x in range(10) if x % 2 == 0)",
    "        if (n <= 1) { return n; }  // base case",
    "for (int i = 0; i < n; ++i) { acc += a[i] * b[i]; }",
    "#include <vector>\t// std::vector",
    "std::unordered_map<std::string, int32_t> vocab_;",
    "const auto [it, inserted] = map.try_emplace(key, 0);",
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"merges\": [\"a b\"]}",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "$ cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2",
    "x = [1, 2, 3]; y = {'a': 1, 'b': 2}; z = (x, y)",
    "if __name__ == \"__main__\":",
    "fn main() { println!(\"Hello, {}!\", name); }",
    "<div class=\"container\"><p>Some &amp; text &lt;here&gt;</p></div>",
    "lambda x: x**2 + 2*x + 1  # a polynomial",
    "regex: ^\\s*(\\d{1,3})\\.(\\d+)?$ and path C:\\Users\\name\\file.txt",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=1;g>>=2;h&=i|j^k;",
    "    \t    mixed indentation\t  ",
    "0x7fffffff 0b1010 0o755 1e-5 3.14159 -2.5e+10 1_000_000",
]

NUMBERS = [
    "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890",
    "Phone: +1 (555) 123-4567, ZIP 90210, year 2024, pi 3.14159265358979",
    "Arabic-Indic digits: ٠١٢٣٤٥٦٧٨٩ and Devanagari: ०१२३४५६७८९",
    "Fullwidth digits: ０１２３４５６７８９ and superscripts: ¹²³ and fractions ½ ¼ ¾",
    "Roman numerals: Ⅰ Ⅱ Ⅲ Ⅳ Ⅴ and circled ① ② ③",
    "IPv4 192.168.0.1, IPv6 2001:db8::ff00:42:8329, version 1.2.3-rc.4+build.5",
    "Dates: 2024-01-31T23:59:59Z, 31/01/2024, Jan 31st, 2024",
    "0000000000000000000000000000000000000000",
    "3.141592653589793238462643383279502884197169399375105820974944",
]

SPECIALS = [
    "<|endoftext|>",
    "Text before <|endoftext|> and after.",
    "<|im_start|>user\nHi there<|im_end|>",
    "<|im_start|>assistant Sure!<|im_end|><|endoftext|>",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>system<|end_header_id|> You are helpful.<|eot_id|>",
    "<|reserved_special_token_0|><|reserved_special_token_1|>",
    "<s>Hello</s> <unk> <pad>",
    "<|endoftext <|endoftext|| |endoftext|> <|im_start <|begin_of_text",
    "<<|endoftext|>> <|<|im_end|>|>",
]

WHITESPACE = [
    "two  spaces",
    "three   spaces",
    "sixteen                spaces",
    "\t",
    "\t\t\t",
    "  \t  \t  ",
    "trailing space ",
    "trailing spaces    ",
    " leading space",
    "    leading spaces",
    "nbsp\u00a0between\u00a0words and\u00a0\u00a0twice",
    "thin\u2009space, en\u2002space, em\u2003space, narrow\u202fnbsp",
    "zero\u200bwidth\u200bspace and joiner\u200dhere and bom\ufeffhere",
    "vertical\u000btab and form\u000cfeed and next\u0085line",
    "line\u2028separator and paragraph\u2029separator",
    "control\u0001chars\u001f and del\u007f",
    "replacement \ufffd char",
    "      ",
]

POOLS = [PROSE, ACCENTS, CJK, EMOJI, CODE, NUMBERS, SPECIALS, WHITESPACE]
SEPARATORS = [" ", " ", " ", "  ", "\t", " \t ", "   ", "", ", ", "; ", " — ", "\u3000", "\u00a0"]


def words(line):
    return [w for w in line.split(" ") if w]


def main():
    rng = random.Random(20240531)
    lines = []
    for pool in POOLS:
        lines.extend(line for line in pool if "\n" not in line)
    fragments = [line for pool in POOLS for line in pool]
    all_words = [w.replace("\n", " ") for f in fragments for w in words(f)]
    while len(lines) < 3200:
        kind = rng.random()
        if kind < 0.45:  # a few whole fragments, joined by assorted separators
            parts = [rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(2, 4))]
            line = "".join(p + rng.choice(SEPARATORS) for p in parts)
        elif kind < 0.8:  # shuffled words from everywhere
            line = ""
            for _ in range(rng.randint(3, 25)):
                line += rng.choice(all_words) + rng.choice(SEPARATORS)
        elif kind < 0.9:  # numbers of every length, alone and glued to letters
            line = " ".join(
                rng.choice(["", "x", "v", "$", "-", "#", "٣", "中"]) + str(rng.randint(0, 10 ** rng.randint(1, 12)))
                + rng.choice(["", "th", "px", "%", ".5", "k", ","])
                for _ in range(rng.randint(2, 10)))
        else:  # random code points from interesting ranges
            ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
                      (0x590, 0x6FF), (0x900, 0x97F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x22FF),
                      (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF), (0xFF00, 0xFFEF),
                      (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF)]
            line = ""
            for _ in range(rng.randint(5, 40)):
                a, b = rng.choice(ranges)
                c = rng.randint(a, b)
                if c in (0x2028, 0x2029, 0x85):
                    c = 0x20
                line += chr(c)
        line = line.replace("\n", " ").replace("\r", " ")
        lines.append(line)
    out = sys.stdout
    out.reconfigure(newline="\n")
    for line in lines:
        out.write(line + "\n")


if __name__ == "__main__":
    main()
