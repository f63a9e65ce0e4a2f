fn main() {
    println!("ssis-agent: not yet implemented");
}
