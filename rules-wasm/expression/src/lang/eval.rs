//! Evaluation over one target, with unknown values (see the parent module).

use std::fmt::Write as _;

use super::syntax::{Expr, Node, Op, Part};

/// What an evaluation reads: one target and, with `each`, one of its disks or processes.
pub trait Scope {
    type Disk;
    type Proc;
    fn name(&self, name: &str) -> Value<'_, Self>;
    fn disk(&self, mount: &str) -> Option<&Self::Disk>;
    fn process(&self, name: &str) -> Option<&Self::Proc>;
    fn memory_field(&self, field: &str) -> Value<'_, Self>;
    fn cpu_field(&self, field: &str) -> Value<'_, Self>;
    fn disk_field<'a>(&'a self, d: &'a Self::Disk, field: &str) -> Value<'a, Self>;
    fn process_field<'a>(&'a self, p: &'a Self::Proc, field: &str) -> Value<'a, Self>;
}

pub enum Value<'a, S: Scope + ?Sized> {
    Num(f64),
    Str(std::borrow::Cow<'a, str>),
    Bool(bool),
    Memory,
    Cpu,
    Disk(&'a S::Disk),
    Proc(&'a S::Proc),
    /// Not known for this target (see the module docs).
    Unknown,
}

impl<S: Scope + ?Sized> Value<'_, S> {
    fn num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn truth(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// As a template shows it: integers without decimals, others with one.
    pub fn show(&self) -> String {
        match self {
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
            Value::Num(n) => format!("{n:.1}"),
            Value::Str(s) => s.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Memory => "memory".into(),
            Value::Cpu => "cpu".into(),
            Value::Disk(_) => "disk".into(),
            Value::Proc(_) => "process".into(),
            Value::Unknown => "unknown".into(),
        }
    }
}

fn truth_of<'a, S: Scope + ?Sized>(b: Option<bool>) -> Value<'a, S> {
    b.map_or(Value::Unknown, Value::Bool)
}

/// Evaluate a checked expression against one scope.
pub fn eval<'a, S: Scope + ?Sized>(e: &'a Expr, s: &'a S) -> Value<'a, S> {
    match &e.node {
        Node::Num(n) => Value::Num(*n),
        Node::Str(t) => Value::Str(std::borrow::Cow::Borrowed(t)),
        Node::Bool(b) => Value::Bool(*b),
        Node::Name(n) => s.name(n),
        Node::Field(inner, field) => match eval(inner, s) {
            Value::Memory => s.memory_field(field),
            Value::Cpu => s.cpu_field(field),
            Value::Disk(d) => s.disk_field(d, field),
            Value::Proc(p) => s.process_field(p, field),
            _ => Value::Unknown,
        },
        Node::Not(inner) => truth_of(eval(inner, s).truth().map(|b| !b)),
        Node::Neg(inner) => eval(inner, s).num().map_or(Value::Unknown, |n| Value::Num(-n)),
        Node::And(a, b) => {
            let (x, y) = (eval(a, s).truth(), eval(b, s).truth());
            truth_of(match (x, y) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        Node::Or(a, b) => {
            let (x, y) = (eval(a, s).truth(), eval(b, s).truth());
            truth_of(match (x, y) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        Node::Bin(op, a, b) => binary(*op, eval(a, s), eval(b, s)),
        Node::Call(f, args) => call(f, args, s),
    }
}

fn binary<'a, S: Scope + ?Sized>(op: Op, a: Value<'a, S>, b: Value<'a, S>) -> Value<'a, S> {
    use std::cmp::Ordering;
    if let (Some(x), Some(y)) = (a.num(), b.num()) {
        let n = match op {
            Op::Add => x + y,
            Op::Sub => x - y,
            Op::Mul => x * y,
            // Dividing by zero is unknown, not infinity.
            Op::Div | Op::Rem if y == 0.0 => return Value::Unknown,
            Op::Div => x / y,
            Op::Rem => x % y,
            _ => return compare(op, x.partial_cmp(&y)),
        };
        return Value::Num(n);
    }
    let order: Option<Ordering> = match (&a, &b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    compare(op, order)
}

fn compare<'a, S: Scope + ?Sized>(op: Op, order: Option<std::cmp::Ordering>) -> Value<'a, S> {
    use std::cmp::Ordering::*;
    let Some(o) = order else { return Value::Unknown };
    Value::Bool(match op {
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        _ => return Value::Unknown,
    })
}

fn call<'a, S: Scope + ?Sized>(f: &str, args: &'a [Expr], s: &'a S) -> Value<'a, S> {
    let arg = |i: usize| args.get(i).map_or(Value::Unknown, |a| eval(a, s));
    let text = |v: Value<'a, S>| match v {
        Value::Str(t) => Some(t),
        _ => None,
    };
    match f {
        "disk" => text(arg(0)).and_then(|m| s.disk(&m)).map_or(Value::Unknown, Value::Disk),
        "process" => text(arg(0)).and_then(|n| s.process(&n)).map_or(Value::Unknown, Value::Proc),
        "exists" => Value::Bool(!matches!(arg(0), Value::Unknown)),
        "abs" => arg(0).num().map_or(Value::Unknown, |n| Value::Num(n.abs())),
        "min" | "max" => match (arg(0).num(), arg(1).num()) {
            (Some(a), Some(b)) => Value::Num(if f == "min" { a.min(b) } else { a.max(b) }),
            _ => Value::Unknown,
        },
        "matches" => match (text(arg(0)), text(arg(1))) {
            (Some(t), Some(g)) => Value::Bool(glob(&g, &t)),
            _ => Value::Unknown,
        },
        _ => Value::Unknown,
    }
}

/// `*` any run of characters, `?` one character; everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

pub fn render<S: Scope + ?Sized>(parts: &[Part], s: &S) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Expr(e) => {
                let _ = write!(out, "{}", eval(e, s).show());
            }
        }
    }
    out
}
