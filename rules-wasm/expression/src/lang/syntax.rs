//! Parsing and checking: names, fields and types are checked before anything
//! runs, so a typo is an error with its line and column at load time.

use super::lexer::{lex, Tok};

/// A parse or type error at a byte offset of the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub at: usize,
    pub message: String,
}

impl Error {
    pub(super) fn new(at: usize, message: impl Into<String>) -> Self {
        Error { at, message: message.into() }
    }

    /// `line L, column C: message` (columns count characters, from 1).
    pub fn render(&self, src: &str) -> String {
        let at = self.at.min(src.len());
        let before = src.get(..at).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Num,
    Str,
    Bool,
    Memory,
    Cpu,
    Disk,
    Process,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Num => "a number",
            Type::Str => "a string",
            Type::Bool => "a condition",
            Type::Memory => "memory",
            Type::Cpu => "cpu",
            Type::Disk => "a disk",
            Type::Process => "a process",
        }
    }

    fn fields(self) -> &'static [(&'static str, Type)] {
        use Type::*;
        match self {
            Memory => &[("total", Num), ("used", Num), ("free", Num), ("used_percent", Num)],
            Cpu => &[("cores", Num), ("used_percent", Num), ("model_name", Str)],
            Disk => &[
                ("device", Str),
                ("mountpoint", Str),
                ("fstype", Str),
                ("total", Num),
                ("used", Num),
                ("free", Num),
                ("used_percent", Num),
            ],
            Process => &[
                ("pid", Num),
                ("name", Str),
                ("username", Str),
                ("rss_bytes", Num),
                ("percent_ram", Num),
                ("cmdline", Str),
            ],
            Num | Str | Bool => &[],
        }
    }
}

/// What each evaluation iterates over: the target itself, each disk or each process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Each {
    Host,
    Disk,
    Process,
}

/// The names an expression can use, given what it iterates over.
pub fn names(each: Each) -> Vec<(&'static str, Type)> {
    let mut v = vec![
        ("memory", Type::Memory),
        ("cpu", Type::Cpu),
        ("hostname", Type::Str),
        ("target", Type::Str),
        ("online", Type::Bool),
        ("consecutive_failures", Type::Num),
        ("last_error", Type::Str),
        ("uptime_seconds", Type::Num),
    ];
    match each {
        Each::Host => {}
        Each::Disk => v.push(("disk", Type::Disk)),
        Each::Process => v.push(("process", Type::Process)),
    }
    v
}

const FUNCTIONS: &str =
    "disk(MOUNTPOINT), process(NAME), exists(VALUE), min(A, B), max(A, B), abs(X), matches(TEXT, GLOB)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(f64),
    Str(String),
    Bool(bool),
    Name(String),
    Call(String, Vec<Expr>),
    Field(Box<Expr>, String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// A checked expression: its node, its type and its span in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub node: Node,
    pub ty: Type,
    pub start: usize,
    pub end: usize,
}

/// Deepest nesting accepted: the sandbox's stack is small and the input untrusted.
const MAX_DEPTH: usize = 64;

/// What a binary operator builds.
#[derive(Clone, Copy)]
enum Combine {
    Or,
    And,
    Arith(Op),
}

struct Parser<'a> {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
    names: &'a [(&'static str, Type)],
    depth: usize,
}

/// Parse and type-check `src`; `want` is the type the whole must have.
pub fn parse(src: &str, each: Each, want: Type) -> Result<Expr, Error> {
    let names = names(each);
    let mut p = Parser { toks: lex(src)?, pos: 0, names: &names, depth: 0 };
    if p.peek() == &Tok::End {
        return Err(Error::new(0, "empty expression"));
    }
    let e = p.or()?;
    if p.peek() != &Tok::End {
        let (_, at, _) = &p.toks[p.pos];
        return Err(Error::new(*at, "expected an operator (and, or, >, +, ...) or the end here"));
    }
    if e.ty != want {
        return Err(Error::new(e.start, format!("this is {}, expected {}", e.ty.name(), want.name())));
    }
    Ok(e)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn here(&self) -> usize {
        self.toks[self.pos].1
    }

    fn last_end(&self) -> usize {
        self.toks[self.pos.saturating_sub(1)].2
    }

    fn bump(&mut self) -> (Tok, usize, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.peek()
            == &Tok::Sym(match s {
                "(" => "(",
                ")" => ")",
                "," => ",",
                "." => ".",
                _ => return false,
            })
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn is_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Tok::Ident(w) if words.contains(&w.as_str()))
            || matches!(self.peek(), Tok::Sym(s) if words.contains(s))
    }

    /// An operand of `op` must have type `want` (a condition or a number).
    fn operand(&self, op: &str, e: &Expr, want: Type) -> Result<(), Error> {
        match (e.ty == want, want) {
            (true, _) => Ok(()),
            (false, Type::Bool) => {
                Err(Error::new(e.start, format!("`{op}` needs conditions on both sides; this is {}", e.ty.name())))
            }
            (false, _) => Err(Error::new(e.start, format!("`{op}` needs numbers; this is {}", e.ty.name()))),
        }
    }

    /// One left-associative level of binary operators: `next (op next)*`.
    fn chain(
        &mut self,
        next: fn(&mut Self) -> Result<Expr, Error>,
        op: fn(&Tok) -> Option<(&'static str, Combine)>,
    ) -> Result<Expr, Error> {
        let mut left = next(self)?;
        while let Some((name, combine)) = op(self.peek()) {
            self.bump();
            let right = next(self)?;
            let ty = if matches!(combine, Combine::Arith(_)) { Type::Num } else { Type::Bool };
            self.operand(name, &left, ty)?;
            self.operand(name, &right, ty)?;
            let (start, end) = (left.start, right.end);
            let (l, r) = (Box::new(left), Box::new(right));
            let node = match combine {
                Combine::Or => Node::Or(l, r),
                Combine::And => Node::And(l, r),
                Combine::Arith(op) => Node::Bin(op, l, r),
            };
            left = Expr { node, ty, start, end };
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, Error> {
        self.chain(Self::and, |t| match t {
            Tok::Ident(w) if w == "or" => Some(("or", Combine::Or)),
            Tok::Sym("||") => Some(("or", Combine::Or)),
            _ => None,
        })
    }

    fn and(&mut self) -> Result<Expr, Error> {
        self.chain(Self::not, |t| match t {
            Tok::Ident(w) if w == "and" => Some(("and", Combine::And)),
            Tok::Sym("&&") => Some(("and", Combine::And)),
            _ => None,
        })
    }

    fn not(&mut self) -> Result<Expr, Error> {
        if self.is_word(&["not", "!"]) {
            let (_, start, _) = self.bump();
            let inner = self.nested(Self::not)?;
            self.operand("not", &inner, Type::Bool)?;
            let end = inner.end;
            return Ok(Expr { node: Node::Not(Box::new(inner)), ty: Type::Bool, start, end });
        }
        self.comparison()
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Expr, Error>) -> Result<Expr, Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::new(self.here(), format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn comparison(&mut self) -> Result<Expr, Error> {
        let left = self.sum()?;
        let op = match self.peek() {
            Tok::Sym(">") => Op::Gt,
            Tok::Sym(">=") => Op::Ge,
            Tok::Sym("<") => Op::Lt,
            Tok::Sym("<=") => Op::Le,
            Tok::Sym("==") => Op::Eq,
            Tok::Sym("!=") => Op::Ne,
            _ => return Ok(left),
        };
        let (_, at, _) = self.bump();
        let right = self.sum()?;
        let ordered = !matches!(op, Op::Eq | Op::Ne);
        let comparable = match (left.ty, right.ty) {
            (Type::Num, Type::Num) | (Type::Str, Type::Str) => true,
            (Type::Bool, Type::Bool) => !ordered,
            _ => false,
        };
        if !comparable {
            return Err(Error::new(
                at,
                format!("cannot compare {} with {}", left.ty.name(), right.ty.name())
                    + if matches!(left.ty, Type::Disk | Type::Process | Type::Memory | Type::Cpu) {
                        " (pick a field, e.g. .used_percent)"
                    } else {
                        ""
                    },
            ));
        }
        if matches!(self.peek(), Tok::Sym(">" | ">=" | "<" | "<=" | "==" | "!=")) {
            return Err(Error::new(self.here(), "comparisons do not chain: write `a < b and b < c`"));
        }
        let (start, end) = (left.start, right.end);
        Ok(Expr { node: Node::Bin(op, Box::new(left), Box::new(right)), ty: Type::Bool, start, end })
    }

    fn sum(&mut self) -> Result<Expr, Error> {
        self.chain(Self::product, |t| match t {
            Tok::Sym(s @ "+") => Some((s, Combine::Arith(Op::Add))),
            Tok::Sym(s @ "-") => Some((s, Combine::Arith(Op::Sub))),
            _ => None,
        })
    }

    fn product(&mut self) -> Result<Expr, Error> {
        self.chain(Self::unary, |t| match t {
            Tok::Sym(s @ "*") => Some((s, Combine::Arith(Op::Mul))),
            Tok::Sym(s @ "/") => Some((s, Combine::Arith(Op::Div))),
            Tok::Sym(s @ "%") => Some((s, Combine::Arith(Op::Rem))),
            _ => None,
        })
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if self.peek() == &Tok::Sym("-") {
            let (_, start, _) = self.bump();
            let inner = self.nested(Self::unary)?;
            self.operand("-", &inner, Type::Num)?;
            let end = inner.end;
            return Ok(Expr { node: Node::Neg(Box::new(inner)), ty: Type::Num, start, end });
        }
        let mut e = self.primary()?;
        while self.peek() == &Tok::Sym(".") {
            self.bump();
            let (tok, at, end) = self.bump();
            let Tok::Ident(field) = tok else {
                return Err(Error::new(at, "expected a field name after `.`"));
            };
            let fields = e.ty.fields();
            let Some(&(_, ty)) = fields.iter().find(|(f, _)| *f == field) else {
                let list: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                return Err(Error::new(
                    at,
                    if list.is_empty() {
                        format!("{} has no fields", e.ty.name())
                    } else {
                        format!("{} has no field `{field}` (fields: {})", e.ty.name(), list.join(", "))
                    },
                ));
            };
            let start = e.start;
            e = Expr { node: Node::Field(Box::new(e), field), ty, start, end };
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let (tok, start, end) = self.bump();
        let (node, ty) = match tok {
            Tok::Num(n) => (Node::Num(n), Type::Num),
            Tok::Str(s) => (Node::Str(s), Type::Str),
            Tok::Ident(w) if w == "true" || w == "false" => (Node::Bool(w == "true"), Type::Bool),
            Tok::Ident(w) if self.peek() == &Tok::Sym("(") => return self.call(w, start),
            Tok::Ident(w) => match self.names.iter().find(|(n, _)| *n == w) {
                Some(&(_, ty)) => (Node::Name(w), ty),
                None => {
                    let hint = match w.as_str() {
                        "disk" => " (write disk(\"/mountpoint\"), or set each = \"disk\" to check every disk)",
                        "process" => " (write process(\"name\"), or set each = \"process\")",
                        "and" | "or" | "not" => " (a condition is missing before it)",
                        _ => "",
                    };
                    let known: Vec<&str> = self.names.iter().map(|(n, _)| *n).collect();
                    return Err(Error::new(start, format!("unknown name `{w}`{hint}; names: {}", known.join(", "))));
                }
            },
            Tok::Sym("(") => {
                let inner = self.nested(Self::or)?;
                if !self.eat_sym(")") {
                    return Err(Error::new(self.here(), "expected `)`"));
                }
                return Ok(Expr { end: self.last_end(), start, ..inner });
            }
            Tok::End => return Err(Error::new(start, "the expression ends too early")),
            Tok::Sym(s) => return Err(Error::new(start, format!("expected a value, found `{s}`"))),
        };
        Ok(Expr { node, ty, start, end })
    }

    fn call(&mut self, name: String, start: usize) -> Result<Expr, Error> {
        self.bump(); // (
        let mut args = Vec::new();
        if !self.eat_sym(")") {
            loop {
                args.push(self.nested(Self::or)?);
                if self.eat_sym(")") {
                    break;
                }
                if !self.eat_sym(",") {
                    return Err(Error::new(self.here(), "expected `,` or `)`"));
                }
            }
        }
        let end = self.last_end();
        let (params, ty): (&[Type], Type) = match name.as_str() {
            "disk" => (&[Type::Str], Type::Disk),
            "process" => (&[Type::Str], Type::Process),
            "min" | "max" => (&[Type::Num, Type::Num], Type::Num),
            "abs" => (&[Type::Num], Type::Num),
            "matches" => (&[Type::Str, Type::Str], Type::Bool),
            "exists" => {
                if args.len() != 1 {
                    return Err(Error::new(start, "exists takes 1 argument"));
                }
                return Ok(Expr { node: Node::Call(name, args), ty: Type::Bool, start, end });
            }
            _ => return Err(Error::new(start, format!("unknown function `{name}`; functions: {FUNCTIONS}"))),
        };
        if args.len() != params.len() {
            return Err(Error::new(
                start,
                format!("{name} takes {} argument{}", params.len(), if params.len() == 1 { "" } else { "s" }),
            ));
        }
        for (a, p) in args.iter().zip(params) {
            if a.ty != *p {
                return Err(Error::new(a.start, format!("{name} needs {} here; this is {}", p.name(), a.ty.name())));
            }
        }
        Ok(Expr { node: Node::Call(name, args), ty, start, end })
    }
}

/// The value-bearing parts of a condition (`memory.used_percent`, `disk("/").free`),
/// for a default message that shows what the condition saw.
pub fn operands(e: &Expr, out: &mut Vec<(usize, usize)>) {
    match &e.node {
        Node::And(a, b) | Node::Or(a, b) | Node::Bin(_, a, b) => {
            operands(a, out);
            operands(b, out);
        }
        Node::Not(a) | Node::Neg(a) => operands(a, out),
        Node::Field(..) | Node::Name(_) | Node::Call(..)
            if (e.ty == Type::Num || e.ty == Type::Str) && !out.contains(&(e.start, e.end)) =>
        {
            out.push((e.start, e.end));
        }
        _ => {}
    }
}

/// A template: text with `{expression}` parts; `{{` and `}}` are literal braces.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Expr(Expr),
}

pub fn template(src: &str, each: Each) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = src.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' if rest.peek().map(|&(_, c)| c) == Some('{') => {
                rest.next();
                text.push('{');
            }
            '}' if rest.peek().map(|&(_, c)| c) == Some('}') => {
                rest.next();
                text.push('}');
            }
            '}' => return Err(Error::new(i, "`}` without `{` (write `}}` for a brace)")),
            '{' => {
                let start = i + 1;
                let Some(close) = src[start..].find('}') else {
                    return Err(Error::new(i, "`{` is not closed (write `{{` for a brace)"));
                };
                let inner = &src[start..start + close];
                let e = parse_any(inner, each).map_err(|e| Error::new(start + e.at, e.message))?;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Expr(e));
                while rest.peek().is_some_and(|&(j, _)| j <= start + close) {
                    rest.next();
                }
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Parse an expression of any type (for templates).
fn parse_any(src: &str, each: Each) -> Result<Expr, Error> {
    match parse(src, each, Type::Num) {
        Err(e) if e.message.starts_with("this is ") => {
            let names = names(each);
            let mut p = Parser { toks: lex(src)?, pos: 0, names: &names, depth: 0 };
            p.or()
        }
        other => other,
    }
}
