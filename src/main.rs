fn main() {
    println!("rsmd: not yet");
}
