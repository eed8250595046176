//! Numbered placeholders (`$1, $2, …`) for statements with a variable number of parameters.
//! sqlx's `QueryBuilder` writes `?` for the `Any` driver, which PostgreSQL rejects; `$n` is
//! accepted by both engines, so the lists are numbered here.

use std::fmt::Write;

/// `$first, $first+1, …` for `n` parameters.
pub fn list(first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "${}", first + i);
    }
    out
}

/// `($1, $2), ($3, $4), …` for `rows` tuples of `columns` parameters, with the same literal
/// SQL appended to every tuple (for example `'PENDING', 0`).
pub fn tuples_with(rows: usize, columns: usize, literal_tail: &str) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&list(1 + r * columns, columns));
        if !literal_tail.is_empty() {
            out.push_str(", ");
            out.push_str(literal_tail);
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbering() {
        assert_eq!(super::list(3, 3), "$3, $4, $5");
        assert_eq!(super::tuples_with(2, 2, ""), "($1, $2), ($3, $4)");
        assert_eq!(super::tuples_with(1, 2, "0"), "($1, $2, 0)");
    }
}
