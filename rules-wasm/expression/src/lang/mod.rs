//! The expression language of expression rules: a parser that checks names and
//! types up front (a typo is an error with its line and column at load time, never
//! a condition that is silently false), and an evaluator over one target.
//!
//! Grammar, loosest first:
//! `or` (`||`), `and` (`&&`), `not` (`!`), comparisons (`> >= < <= == !=`), `+ -`,
//! `* / %`, unary `-`, field access (`.name`), then numbers (with an optional unit:
//! `KB MB GB TB KiB MiB GiB TiB`, `s m h d`), strings in `"..."` or `'...'`, `true`,
//! `false`, names, calls `f(a, b)` and parentheses.
//!
//! A value the target does not have (a mountpoint that is not mounted, the metrics
//! of an offline host) is *unknown*: comparisons with it are unknown, `and`/`or`
//! follow three-valued logic, and an unknown condition neither fires nor recovers.

mod eval;
mod lexer;
mod syntax;

#[cfg(test)]
pub use eval::glob;
pub use eval::{eval, render, Scope, Value};
pub use syntax::{operands, parse, template, Each, Error, Expr, Part, Type};
