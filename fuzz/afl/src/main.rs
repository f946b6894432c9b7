//! Runs one of Treffpunkt's fuzz targets ([`treffpunkt_fuzz::TARGETS`]) under AFL++:
//! `cargo afl fuzz -i fuzz/corpus/sdp -o out -- treffpunkt-fuzz-afl sdp`. `scripts/fuzz` builds
//! it and runs every target.

fn main() {
    let target = std::env::args().nth(1).unwrap_or_default();
    if !treffpunkt_fuzz::TARGETS.iter().any(|(name, _)| *name == target) {
        let names: Vec<&str> = treffpunkt_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: treffpunkt-fuzz-afl <{}>", names.join("|"));
        std::process::exit(2);
    }
    afl::fuzz!(|data: &[u8]| {
        treffpunkt_fuzz::run(&target, data);
    });
}
