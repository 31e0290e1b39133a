// Syntax check for PowerShell scripts without PowerShell (not installable here): parse each
// file with the tree-sitter PowerShell grammar and report ERROR/MISSING nodes.
//   NODE_PATH=<dir with web-tree-sitter, tree-sitter-powershell> node ps-syntax.cjs FILE...
// A grammar, not PowerShell's own parser: it catches unbalanced braces, broken strings and the
// like, not everything PowerShell would reject.
"use strict";
const fs = require("fs");
const { Parser, Language } = require("web-tree-sitter");

(async () => {
  await Parser.init();
  const grammar = require.resolve("tree-sitter-powershell/tree-sitter-powershell.wasm");
  const parser = new Parser();
  parser.setLanguage(await Language.load(grammar));
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    const walk = (node) => {
      if (node.type === "ERROR" || node.isMissing) {
        problems++;
        const where = `${file}:${node.startPosition.row + 1}:${node.startPosition.column + 1}`;
        const what = node.isMissing ? `missing ${node.type}` : "syntax error";
        console.log(`${where}: ${what}: ${node.text.split("\n")[0].slice(0, 60)}`);
      }
      for (const child of node.children) walk(child);
    };
    walk(parser.parse(fs.readFileSync(file, "utf8")).rootNode);
  }
  console.log(problems ? `${problems} problem(s)` : `${process.argv.length - 2} file(s): no syntax errors`);
  process.exit(problems ? 1 : 0);
})();
