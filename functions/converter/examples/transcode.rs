//! Converts one file with the converter's transcoding core: `transcode IN OUT
//! [--cbr KBPS | --vbr Q]`. Prints the report as JSON-ish debug output on
//! stderr. Used by `scripts/bench-convert`.

use std::path::PathBuf;
use std::process::ExitCode;

use converter::transcode::{Encoding, TranscodeOptions, check_encoder, transcode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: transcode IN OUT [--cbr KBPS | --vbr Q]");
        return ExitCode::from(2);
    };
    let mut options = TranscodeOptions::default();
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), value) {
            ("--cbr", Some(kbps)) => options.encoding = Some(Encoding::Cbr { bitrate_kbps: kbps }),
            ("--vbr", Some(q)) => {
                options.encoding = Some(Encoding::Vbr {
                    quality: q.min(9) as u8,
                })
            }
            _ => {
                eprintln!("usage: transcode IN OUT [--cbr KBPS | --vbr Q]");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = check_encoder() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match transcode(
        &PathBuf::from(input),
        &PathBuf::from(output),
        &options,
        &mut |_| {},
    ) {
        Ok(report) => {
            eprintln!("{report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
