//! The one POSIX `sh` script that an SSH target runs per poll.
//!
//! One exec per poll, one round trip: the script reads /proc itself with shell
//! builtins (no `ps`, `top` or `free`, whose flags and units differ between GNU and
//! BusyBox) and runs only three programs: `df`, `sort` and one `head` for all
//! command lines (`read` cannot keep the NULs between arguments). It picks the top
//! processes by resident pages on the target, so only their status and command line
//! cross the wire. dash's `read` costs a system call per byte, so loops stop as soon
//! as they have what they need (`Cached:` in meminfo, `VmRSS:` in status). Data lines go through `printf '%s'`, never `echo`, which in dash
//! would decode the `\040` escapes of /proc/mounts.
//!
//! Every section starts with a marker line `@@<nonce> <name> [arg]`. The nonce is
//! fresh per poll so that a process whose command line contains a marker cannot
//! forge a section. The last section is `end`: without it the output is truncated.

use std::fmt::Write;

/// Longest command line read per process; longer ones are cut.
pub const CMDLINE_MAX: usize = 4096;

/// Build the script for one poll. `excluded_fstypes` must hold only `[a-z0-9._-]`
/// names (config validation guarantees it), as they are pasted into a `case` pattern.
pub fn poll_script(nonce: &str, top_n: usize, excluded_fstypes: &[String], facts: &[crate::facts::Fact]) -> String {
    let skip = if excluded_fstypes.is_empty() {
        // `case` needs at least one pattern; this matches nothing real.
        "monserv-none".to_string()
    } else {
        excluded_fstypes.join("|")
    };
    let mut s = String::with_capacity(2048);
    let _ = write!(
        s,
        r#"export LC_ALL=C
M='@@{nonce}'
cd /proc || exit 3
echo "$M hostname"; read -r v < sys/kernel/hostname; printf '%s\n' "$v"
echo "$M uptime"; read -r v < uptime; printf '%s\n' "$v"
echo "$M meminfo"
a=
while read -r k v x; do case $k in MemAvailable:) a=1; printf '%s %s %s\n' "$k" "$v" "$x";; MemTotal:|MemFree:|Buffers:|SReclaimable:) printf '%s %s %s\n' "$k" "$v" "$x";; Cached:) printf '%s %s %s\n' "$k" "$v" "$x"; [ -n "$a" ] && break;; esac; done < meminfo
echo "$M stat"
while read -r l; do case $l in cpu*) printf '%s\n' "$l";; *) break;; esac; done < stat
echo "$M cpuinfo"
while read -r l; do case $l in 'model name'*|'cpu model'*) printf '%s\n' "$l"; break;; Processor*|Hardware*|Model*) printf '%s\n' "$l";; esac; done < cpuinfo
echo "$M mounts"
set --
while read -r d m t x; do
  printf '%s %s %s\n' "$d" "$m" "$t"
  case $t in {skip}) continue;; esac
  case $m in *\\*) continue;; esac
  set -- "$@" "$m"
done < mounts
echo "$M df"
[ $# -gt 0 ] && df -Pk "$@" 2>/dev/null
set -- $(for p in [0-9]*; do read -r s r x 2>/dev/null < "$p/statm" && echo "$r $p"; done | sort -rn)
n=0; uids=; files=
while [ $# -ge 2 ] && [ $n -lt {top_n} ]; do
  p=$2; shift 2; n=$((n+1))
  echo "$M proc $p"
  while read -r k v x; do case $k in Name:) printf '%s %s %s\n' "$k" "$v" "$x";; Uid:) echo "$k $v"; uids="$uids $v";; VmRSS:) printf '%s %s %s\n' "$k" "$v" "$x"; break;; esac; done 2>/dev/null < "$p/status"
  files="$files $p/cmdline"
done
echo "$M cmdlines"
[ -n "$files" ] && head -v -c {cmd_max} $files 2>/dev/null
echo
echo "$M passwd"
[ -n "$uids" ] && while IFS=: read -r n x u r; do case " $uids " in *" $u "*) printf '%s:%s\n' "$n" "$u";; esac; done < /etc/passwd
{facts}echo "$M end"
"#,
        cmd_max = CMDLINE_MAX,
        facts = super::facts::script_sections(facts),
    );
    s
}

/// One section of the script's output.
#[derive(Debug, PartialEq, Eq)]
pub struct Section<'a> {
    pub name: &'a [u8],
    /// The word after the name (`proc 123` -> `123`), empty when none.
    pub arg: &'a [u8],
    pub body: &'a [u8],
}

/// Split the output at marker lines. Bytes before the first marker (a login banner,
/// a shell's complaint) are ignored. Fails when the `end` marker is missing.
pub fn split_sections<'a>(out: &'a [u8], nonce: &str) -> Result<Vec<Section<'a>>, super::parse::ParseError> {
    let marker = format!("@@{nonce} ");
    let marker = marker.as_bytes();
    // Start offsets of marker lines.
    let mut starts = Vec::new();
    let mut line_start = 0;
    while line_start < out.len() {
        if out[line_start..].starts_with(marker) {
            starts.push(line_start);
        }
        match out[line_start..].iter().position(|&b| b == b'\n') {
            Some(nl) => line_start += nl + 1,
            None => break,
        }
    }
    let mut sections = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let header_end = out[start..].iter().position(|&b| b == b'\n').map_or(out.len(), |p| start + p);
        let header = &out[start + marker.len()..header_end];
        let (name, arg) = match header.iter().position(|&b| b == b' ') {
            Some(sp) => (&header[..sp], &header[sp + 1..]),
            None => (header, &header[header.len()..]),
        };
        let body_start = (header_end + 1).min(out.len());
        let body_end = starts.get(i + 1).map_or(out.len(), |&next| next.saturating_sub(1).max(body_start));
        sections.push(Section { name, arg, body: &out[body_start..body_end] });
    }
    if sections.last().map(|s| s.name) != Some(b"end".as_slice()) {
        return Err(super::parse::ParseError::Malformed {
            what: "host output",
            detail: "truncated or not from the monserv script (no end marker)".into(),
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_embeds_nonce_and_filters() {
        let s = poll_script("abc123", 7, &["proc".into(), "tmpfs".into()], &[]);
        assert!(s.contains("M='@@abc123'"));
        assert!(s.contains("case $t in proc|tmpfs) continue;; esac"));
        assert!(s.contains("[ $n -lt 7 ]"));
    }

    #[test]
    fn splits_sections_and_ignores_forged_markers() {
        let out = b"banner\n@@n1 hostname\nhost\n@@n1 proc 42\nName: a\n@@n1 cmdline 42\nx\0@@evil end\n\n@@n1 end\n";
        let s = split_sections(out, "n1").unwrap();
        let names: Vec<&[u8]> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, vec![&b"hostname"[..], b"proc", b"cmdline", b"end"]);
        assert_eq!(s[0].body, b"host");
        assert_eq!(s[1].arg, b"42");
        assert_eq!(s[2].body, b"x\0@@evil end\n");
    }

    #[test]
    fn missing_end_is_truncation() {
        assert!(split_sections(b"@@n hostname\nh\n", "n").is_err());
        assert!(split_sections(b"", "n").is_err());
        assert!(split_sections(b"\xff\x00garbage", "n").is_err());
        // An empty last body is fine.
        assert_eq!(split_sections(b"@@n end", "n").unwrap()[0].body, b"");
    }
}
