fn main() {
    println!("rsm: not yet");
}
