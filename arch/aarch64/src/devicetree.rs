//! What the kernel needs from the flattened device tree: the console UART, the interrupt
//! controller, the timer's interrupt, the PSCI conduit and the top of RAM.
//!
//! Boot-only. Bindings followed (Linux `Documentation/devicetree/bindings`): `arm,pl011`
//! (`serial/pl011.yaml`), `arm,gic-v3` and `arm,cortex-a15-gic`/`arm,gic-400`
//! (`interrupt-controller/arm,gic-v3.yaml`, `arm,gic.yaml`), `arm,armv8-timer`
//! (`timer/arm,arch_timer.yaml`), `arm,psci` (`arm/psci.yaml`).

use arch_api::EarlyError;
use fdt::Fdt;
use fdt::node::FdtNode;

/// A physical MMIO range from a `reg` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

/// The most redistributor regions a GICv3 node may list that this kernel handles.
pub const MAX_REDISTRIBUTOR_REGIONS: usize = 4;

/// The interrupt controller, by version.
#[derive(Clone, Copy, Debug)]
pub enum GicDescription {
    /// GICv2: distributor and memory-mapped CPU interface.
    V2 {
        distributor: Region,
        cpu_interface: Region,
    },
    /// GICv3: distributor and the redistributor regions (the CPU interface is system
    /// registers). `stride` is the `redistributor-stride` property, when given.
    V3 {
        distributor: Region,
        redistributors: [Option<Region>; MAX_REDISTRIBUTOR_REGIONS],
        stride: Option<u64>,
    },
}

/// How an interrupt line signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Which generic-timer interrupt Keel uses, and how it is wired.
///
/// Keel uses the **EL1 virtual timer** (CNTV, the third entry of the binding's `interrupts`):
/// it is always accessible from EL1, while a hypervisor may trap EL1's use of the physical
/// timer (CNTHCTL_EL2.EL1PCEN), and on a machine without EL2 (QEMU `virt` by default) the
/// virtual offset is 0, so CNTV counts exactly like CNTP. Linux makes the same choice when
/// entered at EL1.
#[derive(Clone, Copy, Debug)]
pub struct TimerDescription {
    /// The GIC interrupt ID (a PPI: 16 + the binding's number).
    pub intid: u32,
    pub trigger: Trigger,
    /// The node's `clock-frequency`, for firmware that left CNTFRQ_EL0 unset.
    pub clock_frequency: Option<u64>,
}

/// The PSCI conduit (`method` property).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

/// Everything early boot takes from the device tree.
#[derive(Clone, Copy, Debug)]
pub struct Devices {
    pub uart: Region,
    /// The UART's interrupt (an SPI's INTID) and trigger, from its `interrupts` property.
    pub uart_interrupt: Option<(u32, Trigger)>,
    /// The UART's reference clock (`uartclk`), when the tree names one.
    pub uart_clock: Option<u64>,
    /// The UART's interrupt as a GIC INTID (its first `interrupts` specifier), if any.
    pub uart_intid: Option<u32>,
    pub gic: GicDescription,
    pub timer: TimerDescription,
    /// `None` when the tree has no PSCI 0.2+ node (PSCI 0.1 has no SYSTEM_OFF).
    pub psci: Option<PsciMethod>,
    /// One past the highest RAM address of the `memory` nodes.
    pub memory_top: u64,
}

const PL011: &[&str] = &["arm,pl011"];
const GIC_V3: &[&str] = &["arm,gic-v3"];
const GIC_V2: &[&str] = &["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic"];
const TIMER: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
const PSCI: &[&str] = &["arm,psci-1.0", "arm,psci-0.2"];
/// Index of the virtual timer in the timer node's `interrupts` (secure phys, non-secure phys,
/// virtual, hypervisor phys).
const VIRTUAL_TIMER_INDEX: usize = 2;
/// GIC interrupt specifier types (the first cell): shared and private peripheral.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// First SPI interrupt ID.
const SPI_BASE: u32 = 32;
/// First PPI interrupt ID.
const PPI_BASE: u32 = 16;

/// Parse `blob` into the devices the kernel needs.
pub fn parse(blob: &[u8]) -> Result<Devices, EarlyError> {
    let tree = Fdt::new(blob).map_err(|_| EarlyError::MissingDevice("device tree (bad header)"))?;
    let uart_node = find_uart(&tree).ok_or(EarlyError::MissingDevice("PL011 UART (arm,pl011)"))?;
    let uart = first_reg(uart_node).ok_or(EarlyError::MissingDevice("PL011 UART `reg`"))?;
    let uart_clock = uart_clock(&tree, uart_node);
    let uart_intid = uart_node
        .property("interrupts")
        .and_then(|interrupts| gic_intid(interrupts.value));
    let timer_node = tree
        .find_compatible(TIMER)
        .ok_or(EarlyError::MissingDevice("timer (arm,armv8-timer)"))?;
    let gic_node = interrupt_parent(&tree, timer_node)
        .or_else(|| tree.find_compatible(GIC_V3))
        .or_else(|| tree.find_compatible(GIC_V2))
        .ok_or(EarlyError::MissingDevice(
            "interrupt controller (arm,gic-v3 or GICv2)",
        ))?;
    let gic = describe_gic(gic_node)?;
    let timer = describe_timer(timer_node, gic_node)?;
    let uart_interrupt = describe_spi(uart_node, gic_node);
    let psci = tree.find_compatible(PSCI).and_then(|node| {
        match node.property("method").and_then(|method| method.as_str()) {
            Some("hvc") => Some(PsciMethod::Hvc),
            Some("smc") => Some(PsciMethod::Smc),
            _ => None,
        }
    });
    Ok(Devices {
        uart,
        uart_interrupt,
        uart_clock,
        uart_intid,
        gic,
        timer,
        psci,
        memory_top: memory_top(&tree),
    })
}

/// `/chosen/stdout-path` when it names a PL011, else the first PL011 not disabled.
fn find_uart<'b, 'a>(tree: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    let chosen = tree
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("stdout-path"))
        .and_then(|path| path.as_str())
        // "serial0:115200n8": the options after ':' are not part of the path.
        .and_then(|path| path.split(':').next())
        .and_then(|path| tree.find_node(path))
        .filter(|node| is_compatible(*node, PL011));
    chosen.or_else(|| {
        tree.all_nodes()
            .find(|node| is_compatible(*node, PL011) && is_enabled(*node))
    })
}

fn is_compatible(node: FdtNode<'_, '_>, with: &[&str]) -> bool {
    node.compatible()
        .is_some_and(|compatible| compatible.all().any(|c| with.contains(&c)))
}

fn is_enabled(node: FdtNode<'_, '_>) -> bool {
    node.property("status")
        .and_then(|status| status.as_str())
        .is_none_or(|s| s == "okay")
}

fn regs<'a>(node: FdtNode<'_, 'a>) -> impl Iterator<Item = Region> + 'a {
    node.reg().into_iter().flatten().map(|region| Region {
        base: region.starting_address as u64,
        size: region.size.unwrap_or(0) as u64,
    })
}

fn first_reg(node: FdtNode<'_, '_>) -> Option<Region> {
    regs(node).next().filter(|region| region.size != 0)
}

/// The INTID of the first three-cell GIC specifier in `value` (type, number, flags).
fn gic_intid(value: &[u8]) -> Option<u32> {
    let mut specifier = cells(value);
    let kind = specifier.next()?;
    let number = specifier.next()?;
    match kind {
        GIC_SPI => SPI_BASE.checked_add(number),
        GIC_PPI => PPI_BASE.checked_add(number),
        _ => None,
    }
}

/// Big-endian 32-bit cells of a property value.
fn cells(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value
        .chunks_exact(4)
        .map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
}

fn u32_property(node: FdtNode<'_, '_>, name: &str) -> Option<u32> {
    node.property(name)
        .and_then(|property| cells(property.value).next())
}

/// The frequency of the UART's `uartclk` (or its only clock), through the clock's phandle.
fn uart_clock(tree: &Fdt<'_>, uart: FdtNode<'_, '_>) -> Option<u64> {
    let index = uart
        .property("clock-names")
        .map(|names| {
            names
                .value
                .split(|&b| b == 0)
                .position(|name| name == b"uartclk")
        })
        .map_or(Some(0), |position| position)?;
    // Fixed clocks have `#clock-cells = <0>`, so each specifier is one phandle cell.
    let phandle = cells(uart.property("clocks")?.value).nth(index)?;
    let clock = tree.find_phandle(phandle)?;
    clock
        .property("clock-frequency")?
        .as_usize()
        .map(|hz| hz as u64)
}

/// The node's `interrupt-parent`, else the nearest one inherited from the root.
fn interrupt_parent<'b, 'a>(tree: &'b Fdt<'a>, node: FdtNode<'b, 'a>) -> Option<FdtNode<'b, 'a>> {
    let phandle = u32_property(node, "interrupt-parent").or_else(|| {
        tree.find_node("/")
            .and_then(|root| u32_property(root, "interrupt-parent"))
    })?;
    tree.find_phandle(phandle)
}

fn describe_gic(node: FdtNode<'_, '_>) -> Result<GicDescription, EarlyError> {
    let mut regions = regs(node);
    if is_compatible(node, GIC_V3) {
        let distributor = regions
            .next()
            .ok_or(EarlyError::MissingDevice("GICv3 distributor `reg`"))?;
        let count = u32_property(node, "#redistributor-regions").unwrap_or(1) as usize;
        if count == 0 || count > MAX_REDISTRIBUTOR_REGIONS {
            return Err(EarlyError::MissingDevice(
                "GICv3 #redistributor-regions (1 to 4)",
            ));
        }
        let mut redistributors = [None; MAX_REDISTRIBUTOR_REGIONS];
        for slot in redistributors.iter_mut().take(count) {
            *slot = Some(
                regions
                    .next()
                    .ok_or(EarlyError::MissingDevice("GICv3 redistributor `reg`"))?,
            );
        }
        let stride = node
            .property("redistributor-stride")
            .and_then(|p| p.as_usize());
        Ok(GicDescription::V3 {
            distributor,
            redistributors,
            stride: stride.map(|s| s as u64),
        })
    } else if is_compatible(node, GIC_V2) {
        let distributor = regions
            .next()
            .ok_or(EarlyError::MissingDevice("GICv2 distributor `reg`"))?;
        let cpu_interface = regions
            .next()
            .ok_or(EarlyError::MissingDevice("GICv2 CPU interface `reg`"))?;
        Ok(GicDescription::V2 {
            distributor,
            cpu_interface,
        })
    } else {
        Err(EarlyError::MissingDevice(
            "interrupt controller: not a GICv2 or GICv3",
        ))
    }
}

fn describe_timer(
    timer: FdtNode<'_, '_>,
    gic: FdtNode<'_, '_>,
) -> Result<TimerDescription, EarlyError> {
    // Three cells (type, number, flags), or four on a GICv3 with PPI partitions.
    let width = gic.interrupt_cells().unwrap_or(3);
    if width < 3 {
        return Err(EarlyError::MissingDevice(
            "GIC #interrupt-cells (at least 3)",
        ));
    }
    let interrupts = timer
        .property("interrupts")
        .ok_or(EarlyError::MissingDevice("timer `interrupts`"))?;
    let mut specifier = cells(interrupts.value).skip(VIRTUAL_TIMER_INDEX * width);
    let (Some(kind), Some(number), Some(flags)) =
        (specifier.next(), specifier.next(), specifier.next())
    else {
        return Err(EarlyError::MissingDevice(
            "virtual timer interrupt (third timer interrupt)",
        ));
    };
    if kind != GIC_PPI || number >= 16 {
        return Err(EarlyError::MissingDevice(
            "virtual timer interrupt is not a PPI",
        ));
    }
    let trigger = trigger_of(flags);
    let clock_frequency = u32_property(timer, "clock-frequency").map(u64::from);
    Ok(TimerDescription {
        intid: PPI_BASE + number,
        trigger,
        clock_frequency,
    })
}

/// Trigger from the low nibble of a GIC specifier's flags: 1/2 edge, 4/8 level
/// (`interrupt-controller/irq.h`).
fn trigger_of(flags: u32) -> Trigger {
    if flags & 0b0011 != 0 {
        Trigger::Edge
    } else {
        Trigger::Level
    }
}

/// A device's first interrupt, when it is an SPI of `gic`: its INTID and trigger.
fn describe_spi(device: FdtNode<'_, '_>, gic: FdtNode<'_, '_>) -> Option<(u32, Trigger)> {
    let width = gic.interrupt_cells().unwrap_or(3);
    if width < 3 {
        return None;
    }
    let mut specifier = cells(device.property("interrupts")?.value);
    let (kind, number, flags) = (specifier.next()?, specifier.next()?, specifier.next()?);
    // SPIs 0–987 are INTIDs 32–1019.
    (kind == GIC_SPI && number < 988).then(|| (SPI_BASE + number, trigger_of(flags)))
}

fn memory_top(tree: &Fdt<'_>) -> u64 {
    tree.all_nodes()
        .filter(|node| {
            node.property("device_type").and_then(|kind| kind.as_str()) == Some("memory")
        })
        .flat_map(regs)
        .map(|region| region.base.saturating_add(region.size))
        .max()
        .unwrap_or(0)
}
