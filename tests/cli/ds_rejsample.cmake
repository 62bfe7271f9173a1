# Golden CLI test of ds-rejsample (included by tests/cli/CMakeLists.txt); the pipe test uses ds-reward.
if(TARGET ds-rejsample AND TARGET ds-reward)
  add_test(NAME cli_ds_rejsample
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_rejsample.sh $<TARGET_FILE:ds-rejsample> $<TARGET_FILE:ds-reward>)
  set_tests_properties(cli_ds_rejsample PROPERTIES TIMEOUT 120)
endif()
