# U-Boot boot script of the CM4 box (mkimage -T script -d boot.cmd boot.scr).
# A/B boot chooser: BOOT_ORDER lists slots, BOOT_<X>_LEFT counts the attempts
# a slot has left. Each boot decrements the counter of the slot it picks;
# holdline's update agent resets it to 3 after a healthy boot (commit), sets
# it to 1 for a trial and 0 for a failed slot. A watchdog reset during a trial
# therefore falls back to the other slot on the next boot.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv bootpart
setenv holdline_slot
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test "x${bootpart}" != "x"; then
    # a slot was chosen already
  elif test "x${BOOT_SLOT}" = "xA"; then
    if test ${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
      echo "holdline: booting slot A, ${BOOT_A_LEFT} attempts left"
      setenv bootpart 2
      setenv holdline_slot A
    fi
  elif test "x${BOOT_SLOT}" = "xB"; then
    if test ${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
      echo "holdline: booting slot B, ${BOOT_B_LEFT} attempts left"
      setenv bootpart 3
      setenv holdline_slot B
    fi
  fi
done

if test -n "${bootpart}"; then
  saveenv
else
  echo "holdline: no bootable slot left, restoring attempts"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  saveenv
  reset
fi

setenv bootargs "console=ttyAMA0,115200 root=/dev/mmcblk0p${bootpart} rootfstype=ext4 rootwait ro holdline.slot=${holdline_slot}"
load mmc 0:${bootpart} ${kernel_addr_r} /boot/Image
load mmc 0:${bootpart} ${fdt_addr_r} /boot/bcm2711-rpi-cm4.dtb
booti ${kernel_addr_r} - ${fdt_addr_r}
