# install.cmake - what `cmake --install build --prefix P` installs, and the
# Debian package `cpack -G DEB` builds from it (configure with
# -DCMAKE_INSTALL_PREFIX=/usr -DPGQLUA_SYSTEMD_UNIT_DIR=/lib/systemd/system
# -DPGQLUA_MAN_GZ=ON for the package, as tests/integration/t_install.sh does).
#
#   P/bin/pgqlua, P/lib/libpgqlua.a, P/lib/libpgqlua.so.0 (SONAME), P/include/pgqlua.h,
#   P/lib/pkgconfig/pgqlua.pc, P/share/pgqlua/{lua,meta,conf,scripts},
#   P/share/man/man1/pgqlua.1, P/share/doc/pgqlua/
#
# The installed program finds P/share/pgqlua/lua beside itself
# (PGQLUA_LUA_FROM_BIN in lbridge.c), whatever P is.

set(PGQLUA_SYSTEMD_UNIT_DIR "" CACHE PATH
    "Also install the systemd unit here (the package: /lib/systemd/system)")

install(TARGETS pgqlua pgqlua_shared pgqlua_bin
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES runtime/include/pgqlua.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

file(RELATIVE_PATH PGQLUA_PC_TO_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/$" "" PGQLUA_PC_TO_PREFIX "${PGQLUA_PC_TO_PREFIX}")
configure_file(cmake/pgqlua.pc.in pgqlua.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/pgqlua.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(DIRECTORY lua/pgqlua DESTINATION ${CMAKE_INSTALL_DATADIR}/pgqlua/lua)
install(DIRECTORY lua/meta/ DESTINATION ${CMAKE_INSTALL_DATADIR}/pgqlua/meta)
install(DIRECTORY conf/ DESTINATION ${CMAKE_INSTALL_DATADIR}/pgqlua/conf)
install(DIRECTORY scripts/ DESTINATION ${CMAKE_INSTALL_DATADIR}/pgqlua/scripts)
option(PGQLUA_MAN_GZ "Install the man page compressed (the package)" OFF)
if(PGQLUA_MAN_GZ)
  add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/pgqlua.1.gz
                     COMMAND gzip -9n -c ${CMAKE_CURRENT_SOURCE_DIR}/doc/pgqlua.1 > ${CMAKE_CURRENT_BINARY_DIR}/pgqlua.1.gz
                     DEPENDS doc/pgqlua.1)
  add_custom_target(pgqlua_man ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/pgqlua.1.gz)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/pgqlua.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
else()
  install(FILES doc/pgqlua.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
endif()
if(PGQLUA_SYSTEMD_UNIT_DIR)
  install(FILES conf/pgqlua@.service DESTINATION ${PGQLUA_SYSTEMD_UNIT_DIR})
endif()

# Documentation; the package's changelog is compressed as Debian wants it.
set(PGQLUA_CHANGELOG_GZ ${CMAKE_CURRENT_BINARY_DIR}/changelog.gz)
add_custom_command(OUTPUT ${PGQLUA_CHANGELOG_GZ}
                   COMMAND gzip -9n -c ${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/changelog > ${PGQLUA_CHANGELOG_GZ}
                   DEPENDS packaging/deb/changelog)
add_custom_target(pgqlua_changelog ALL DEPENDS ${PGQLUA_CHANGELOG_GZ})
# The Debian copyright file (machine-readable) holds LICENSE's permission
# text: the license lives in LICENSE alone.
set(PGQLUA_MAINTAINER "pgqlua maintainers <maintainers@pgqlua.org>")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)
file(READ ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE PGQLUA_LICENSE_TEXT)
string(REGEX REPLACE "^.*Copyright [^\n]*\n\n" "" PGQLUA_LICENSE_TEXT "${PGQLUA_LICENSE_TEXT}")
string(STRIP "${PGQLUA_LICENSE_TEXT}" PGQLUA_LICENSE_TEXT)
string(REPLACE "\n\n" "\n.\n" PGQLUA_LICENSE_TEXT "${PGQLUA_LICENSE_TEXT}")
string(REPLACE "\n" "\n " PGQLUA_LICENSE_TEXT "${PGQLUA_LICENSE_TEXT}")
configure_file(packaging/deb/copyright.in ${CMAKE_CURRENT_BINARY_DIR}/copyright @ONLY)
install(FILES README.md ${CMAKE_CURRENT_BINARY_DIR}/copyright ${PGQLUA_CHANGELOG_GZ}
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- the Debian package --------------------------------------------------------
set(CPACK_PACKAGE_NAME pgqlua)
set(CPACK_PACKAGE_VENDOR "pgqlua")
set(CPACK_PACKAGE_CONTACT "${PGQLUA_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Lua-scripted consumers for PgQ queues in PostgreSQL")
set(CPACK_PACKAGE_DESCRIPTION "pgqlua runs PostgreSQL PgQ queue consumers whose business
logic is a Lua 5.4 script. A C core speaks the PgQ batch protocol over
libpq and owns the transactions; each batch is one transaction, so an
event's effect is applied exactly once.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.34), libpq5, liblua5.4-0, libyaml-0-2, lua-dkjson, lua-yaml, libmicrohttpd12, libcurl4, adduser")
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/postinst
    ${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)
include(CPack)
