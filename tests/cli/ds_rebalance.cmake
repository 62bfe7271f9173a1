# Golden CLI test of ds-rebalance (included by tests/cli/CMakeLists.txt).
if(TARGET ds-rebalance)
  add_test(NAME cli_ds_rebalance COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_rebalance.sh $<TARGET_FILE:ds-rebalance>)
  set_tests_properties(cli_ds_rebalance PROPERTIES TIMEOUT 120)
endif()
